"""Model benchmarks: the measuring helpers (FLOPs, MFU, timing, RSS, tables) and smoke runs of
``benchmarks/forward.py`` and ``benchmarks/train_step.py`` with ``--tiny`` (no timing assertions)."""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import common, forward, train_step
from jointist_jax import instruments


# ------------------------------------------------------------------------------ common helpers
def test_matmul_flops_multiplies_scan_bodies_by_their_length():
    def recurrence(h, w):
        return jax.lax.scan(lambda c, _: (c @ w, None), h, None, length=100)[0]

    h, w = jnp.ones((8, 64)), jnp.ones((64, 64))
    per_step = 2 * 8 * 64 * 64
    assert common.matmul_flops(recurrence, h, w) == 100 * per_step
    # Why the jaxpr count exists: XLA's cost analysis counts the loop body once.
    assert common.compile_function(jax.jit(recurrence), h, w).flops_xla < 2 * per_step


def test_matmul_flops_counts_convolutions_and_nested_jit():
    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x, k = jnp.ones((2, 10, 10, 3)), jnp.ones((3, 3, 3, 5))
    expected = 2 * (2 * 10 * 10 * 5) * (3 * 3 * 3)
    assert common.matmul_flops(conv, x, k) == expected
    assert common.matmul_flops(jax.jit(lambda a, b: conv(a, b) * 2), x, k) == expected


def test_compile_function_reports_memory_and_flops():
    compiled = common.compile_function(jax.jit(lambda a: a @ a), jnp.ones((32, 32)))
    assert compiled.flops_xla == 2 * 32**3
    assert compiled.memory["argument_bytes"] == 32 * 32 * 4
    assert compiled.memory["output_bytes"] == 32 * 32 * 4
    assert compiled.memory["total_bytes"] >= 2 * 32 * 32 * 4
    assert compiled.compile_s > 0
    np.testing.assert_allclose(compiled.executable(jnp.eye(32)), jnp.eye(32))


def test_mfu_and_ratio():
    assert common.mfu(2e12, 1.0, 4.0) == pytest.approx(0.5)
    assert common.mfu(1e12, 0.5, 1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="peak_tflops"):
        common.mfu(1e12, 1.0, 0.0)
    assert common.ratio(1.0, 4.0) == 0.25
    assert common.ratio(None, 4.0) is None and common.ratio(1.0, None) is None


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    timing = common.time_calls(lambda: calls.append(1) or jnp.zeros(()), repeats=3, warmup=2)
    assert len(calls) == 5
    assert len(timing.wall_s) == len(timing.cpu_s) == 3
    assert timing.min_wall_s <= timing.median_wall_s
    with pytest.raises(ValueError, match="repeats"):
        common.time_calls(lambda: None, repeats=0)


def test_peak_rss_follows_a_large_allocation_and_resets():
    if not common.reset_peak_rss():
        pytest.skip("this kernel does not allow resetting the peak RSS")
    before = common.peak_rss_mb()
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    grown = common.peak_rss_mb()
    assert grown >= before + 48
    del block
    assert common.reset_peak_rss()
    assert common.peak_rss_mb() < grown - 32


def test_format_table_aligns_and_prints_missing_values_as_dash():
    text = common.format_table([{"name": "a", "x": 1.23456}, {"name": "long name", "x": None}],
                               [("name", "case", ""), ("x", "seconds", ".2f")])
    lines = text.splitlines()
    assert lines[0].split() == ["case", "seconds"]
    assert lines[2].split() == ["a", "1.23"]
    assert lines[3].split()[-1] == "-"
    assert len({len(line) for line in lines}) == 1


def test_parse_csv_rejects_unknown_names():
    assert common.parse_csv("all", ("a", "b"), "--x") == ["a", "b"]
    assert common.parse_csv("b, a", ("a", "b"), "--x") == ["b", "a"]
    with pytest.raises(SystemExit, match="--x"):
        common.parse_csv("a,c", ("a", "b"), "--x")


# ------------------------------------------------------------------------------ forward.py
def test_forward_reference_rows_show_both_39_condition_baselines():
    result = {"module": "transcriber_narrow", "K": 39, "repeats": 1, "wall_s": 36.8,
              "reference": [{"case": "t_infer39b", "s": 73.6, "ratio": 0.5, "cpu_s": 134.1},
                            {"case": "t_infer39 (sequential)", "s": 83.1, "ratio": 36.8 / 83.1, "cpu_s": 148.6}]}
    rows = forward.table_rows([result])
    assert [r["ref_case"] for r in rows] == ["t_infer39b", "t_infer39 (sequential)"]
    assert [r["ref_cpu_s"] for r in rows] == [134.1, 148.6]
    assert rows[0]["case"] == "transcriber_narrow K=39" and rows[1]["case"] == ""
    assert forward.REFERENCE[("transcriber_narrow", 1)] == [("t_infer1", 1.92, None)]
    assert forward.REFERENCE[("transcriber_wide", 1)] == [("tw_infer1", 6.33, 12.2)]


def test_forward_inputs_have_one_clip_and_k_distinct_conditions():
    # Abstract (eval_shape): make_inputs reads only the hop and the roll width.
    model = nnx.eval_shape(lambda: forward.build_module("separator_sum", tiny=True, dtype=jnp.float32,
                                                        rngs=nnx.Rngs(0)))
    waveform, conditions, roll = forward.make_inputs("separator_sum", model, samples=16000, k=5)
    assert waveform.shape == (1, 16000)
    assert conditions.shape == (1, 5, instruments.CONDITION_SIZE)
    np.testing.assert_array_equal(np.argmax(conditions[0], -1), np.arange(5))
    assert roll.shape == (1, 5, 16000 // 160 + 1, 88)
    with pytest.raises(ValueError, match="--conditions"):
        forward.make_inputs("separator_sum", model, samples=16000, k=41)


def test_conditions_in_chunks_equal_one_call():
    """--max_rows: K conditions in chunks (padded to whole chunks) give the one-call result."""
    call = lambda c, r: jnp.einsum("bkc,bktn->bkt", c, r)  # a per-row function of (B, K, ...) inputs
    rng = np.random.default_rng(0)
    conditions = jnp.asarray(rng.normal(size=(1, 7, 40)), jnp.float32)
    roll = jnp.asarray(rng.normal(size=(1, 7, 3, 40)), jnp.float32)
    whole = call(conditions, roll)
    for max_rows in (2, 3, 7, 0):
        np.testing.assert_allclose(np.asarray(forward._in_row_chunks(call, (conditions, roll), max_rows)),
                                   np.asarray(whole), rtol=1e-6)


@pytest.mark.slow
def test_forward_main_tiny_prints_and_dumps_every_field(tmp_path, capsys):
    out = tmp_path / "forward.json"
    payload = forward.main(["--tiny", "--modules", "recognizer,transcriber_narrow", "--conditions", "1,2",
                            "--repeats", "2", "--profile", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "transcriber_narrow K=2" in printed and "GFLOP xla" in printed
    assert printed.count("ms of host op time per step") == 3  # --profile: one summary per case
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    results = payload["results"]
    assert [(r["module"], r["K"]) for r in results] == [
        ("recognizer", None), ("transcriber_narrow", 1), ("transcriber_narrow", 2)]
    for r in results:
        assert r["repeats"] == 2 and len(r["wall_s_all"]) == 2
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["compile_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["gflops_matmul"] > 0 and r["xla_memory"]["temp_bytes"] >= 0
        assert r["reference"] == []  # tiny numbers are never compared with the reference
    # K conditions share the clip's log-mel but every later FLOP scales with K.
    assert 1.8 < results[2]["gflops_matmul"] / results[1]["gflops_matmul"] < 2.05
    assert all(r["gflops_xla"] > 0 for r in results)
    # --profile: the traced call's ops are the compiled program's; both models spend time in convolutions.
    for r in results:
        assert r["profile"]["unmatched_share"] == 0.0 and r["profile"]["op_ms_per_step"] > 0
        assert abs(sum(r["profile"]["category_share"].values()) - 1.0) < 1e-9
        assert r["profile"]["category_share"]["convolution"] > 0.0 and r["profile"]["top_ops"]


def test_forward_rejects_bad_flags():
    with pytest.raises(SystemExit):
        forward.main(["--tiny", "--modules", "nope"])
    with pytest.raises(SystemExit):
        forward.main(["--tiny", "--conditions", "0"])


# ------------------------------------------------------------------------------ train_step.py
@pytest.mark.parametrize("case", list(train_step.CASES))
def test_stage_batches_have_the_pipeline_fields_and_the_reference_shape(case):
    config = train_step.stage_config(case, tiny=True, dtype="float32")
    spec = train_step.example_spec(case, config)
    batch = train_step.random_batch(spec, config.data.global_batch)
    fields = spec.fields()
    assert sorted(batch) == sorted(name for name, _, _ in fields)
    for name, dtype, shape in fields:
        assert batch[name].shape == (2,) + shape and batch[name].dtype == dtype, name
    if config.stage == "ir":
        assert spec.rows == 0
        return
    assert spec.rows == 1  # 2 clips x 1 condition = 2 rows
    np.testing.assert_array_equal(np.argmax(batch["conditions"], -1), batch["class_ids"])
    assert ("frame_roll" in batch) == (case in ("t_train", "tw_train", "s_train", "ts_train"))
    assert ("source" in batch) == (case in ("s_train", "cu_train", "ts_train"))


def test_stage_configs_pick_the_reference_models():
    full = {case: train_step.stage_config(case, tiny=False, dtype="bfloat16") for case in train_step.CASES}
    assert full["t_train"].model.transcriber.variant == "narrow"
    assert full["tw_train"].model.transcriber.variant == "wide"
    assert (full["s_train"].model.separator.mode, full["s_train"].model.separator.hop) == ("sum", 160)
    assert (full["cu_train"].model.separator.mode, full["cu_train"].model.separator.hop) == ("standalone", 320)
    assert full["ts_train"].stage == "joint" and full["ir_train"].stage == "ir"
    assert all(c.data.global_batch == 2 and c.data.clip_seconds == 10.0 and c.model.dtype == "bfloat16"
               for c in full.values())


@pytest.mark.slow
def test_train_step_main_tiny_reports_every_field(tmp_path, capsys):
    out = tmp_path / "train.json"
    payload = train_step.main(["--tiny", "--stages", "ir_train", "--steps", "2", "--peak_tflops", "0.5",
                               "--json", str(out)])
    printed = capsys.readouterr().out
    assert "ir_train" in printed and "MFU %" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    (r,) = payload["results"]
    assert r["stage"] == "ir" and r["clips"] == 2 and r["devices"] == 2  # 8 test devices, batch 2
    assert len(r["step_s_all"]) == 2 and r["step_s"] > 0 and r["cpu_s"] > 0 and r["compile_s"] > 0
    assert r["clips_per_s"] == pytest.approx(2 / r["step_s"])
    assert np.isfinite(r["loss"]) and r["gflops_matmul"] > 0 and r["peak_rss_mb"] > 0
    assert r["xla_memory"]["alias_bytes"] > 0  # the donated state aliases the new state
    assert r["mfu"] == pytest.approx(r["gflops_matmul"] * 1e9 / r["step_s"] / 0.5e12)
    assert r["ref_s"] is None and r["ratio"] is None  # tiny numbers are never compared


@pytest.mark.slow
def test_gt_roll_separation_step_trains_the_sum_separator_on_the_frame_roll():
    from jointist_jax.train import steps
    from jointist_jax.train.trainer import Run

    config = train_step.stage_config("s_train", tiny=True, dtype="float32")
    mesh = train_step.benchmark_mesh(2)
    stage = train_step.case_stage("s_train", config)
    assert stage.name == "separation_gt_roll" and config.stage == "separation"
    run = Run(config, mesh, stage=stage)
    # The trainer's step function, jitted without donating the state (it is stepped twice below).
    step = jax.jit(steps.make_train_step(run.train_graphdef, run.tx, run.schedule, stage, jax.random.key(0)))
    batch = train_step.random_batch(train_step.example_spec("s_train", config), 2)
    state = run.init_state()
    new_state, metrics = step(state, batch)
    assert int(new_state.step) == 1
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.batch_stats, new_state.batch_stats)
    assert any(jax.tree.leaves(changed))  # BatchNorm statistics are updated in train mode
    # The roll input is the batch's frame_roll: another roll gives another loss.
    other = dict(batch, frame_roll=1.0 - batch["frame_roll"])
    assert float(step(state, other)[1]["loss"]) != pytest.approx(float(metrics["loss"]), rel=1e-7)


# ------------------------------------------------------------------------------ learn_synth / inference
@pytest.mark.slow
def test_learn_synth_trains_and_compares_with_the_untrained_model(tiny_tfds_dir, tmp_path, capsys):
    """Every stage against the untrained model; the transcriber on a time budget (``--train_seconds``):
    it stops as a preempted run does, far short of ``--steps``, and its last step is saved and scored."""
    from benchmarks import learn_synth

    out = tmp_path / "learn.json"
    assert learn_synth.main(["--data_dir", str(tiny_tfds_dir), "--steps", "100000", "--train_seconds", "10",
                             "--checkpoint_every", "1000", "--joint_steps", "1", "--ir_steps", "2", "--points", "1",
                             "--global_batch", "8", "--split", "test", "--workdir", str(tmp_path / "run"),
                             "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed and "note_f1/flat" in printed and "sdr/source_wise" in printed
    assert "tiny transcriber, 10 s (at most 100000 steps)" in printed
    numbers = json.loads(out.read_text())
    trained = numbers["steps"]
    assert numbers["songs"] == 1 and 0 < trained < 1000 and numbers["train_seconds"] >= 10
    assert set(numbers["metrics"]["note_f1/flat"]) == {"untrained", "trained"}
    assert [p["step"] for p in numbers["curve"]] == [0, trained]
    assert [p["step"] for p in numbers["joint"]["curve"]] == [1]
    assert numbers["joint"]["curve"][0]["metrics"]["sdr/source_wise"] is not None
    assert numbers["ir"]["metrics"] and all(set(v) == {"untrained", "trained"} for v in numbers["ir"]["metrics"].values())
    assert (tmp_path / "run" / "trained" / "checkpoints" / str(trained)).is_dir()


@pytest.mark.parametrize("flag", ["--data_dir", "--workdir", "--json"])
def test_learn_synth_refuses_bucket_paths_by_name(flag, tmp_path, monkeypatch, capsys):
    """A gs:// dataset is not reported as missing, nor a gs:// run written to a local ./gs: folder."""
    from benchmarks import learn_synth

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tfds").mkdir()
    argv = {"--data_dir": "tfds", flag: "gs://no-such-bucket/x"}
    with pytest.raises(SystemExit) as info:
        learn_synth.main([part for item in argv.items() for part in item])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"{flag} 'gs://no-such-bucket/x' is a bucket path" in error and "does not exist" not in error
    assert [p.name for p in tmp_path.iterdir()] == ["tfds"]


def test_learn_synth_trains_any_transcriber_size_with_the_runlocal_recipe():
    import configs.defaults
    from benchmarks import learn_synth

    args = SimpleNamespace(transcriber="small", clip_seconds=1.5, data_dir="d", global_batch=None, steps=800,
                           checkpoint_every=None, points=4, lr=None, warmup_steps=None, output_prior=None)
    config = learn_synth.build_config(args, "transcription")
    small = configs.defaults.transcriber_config("small")
    assert tuple(config.model.transcriber.variant) == tuple(small.variant)
    assert config.model.transcriber.acoustic_dim == small.acoustic_dim
    assert (config.model.transcriber.output_prior, config.model.transcriber.bn_momentum) == (
        configs.defaults.RUNLOCAL_OUTPUT_PRIOR, configs.defaults.RUNLOCAL_BN_MOMENTUM)
    assert config.data.clip_seconds == 1.5 and config.checkpoint_every == 200
    # The recipe's schedule is kept: the demo's transcriber halves its rate every 200 steps.
    assert (config.optimizer.decay_rate, config.optimizer.decay_every) == (0.5, 200)


def test_inference_benchmark_runs_at_tiny_size_with_instrument_groups_beside_the_old_programs(capsys):
    """With --compare_old: the old programs (training compile options, hop 80000) and the new ones
    at each hop, one row each with the new rows' CPU-second ratio to the old, and the same outputs."""
    import re

    from benchmarks import inference

    assert inference.main(["--seconds", "21", "--instruments", "3", "--size", "tiny", "--max_rows", "2",
                           "--window_hops", "80000,160000", "--compare_old"]) == 0
    printed = capsys.readouterr().out
    assert "max_rows 2" in printed and "RTF" in printed and "new/old" in printed
    assert "4 windows at hop 80000 / 3 windows at hop 160000" in printed
    # One row per variant (K = 3 in groups of 2): K, variant, hop, windows; new/old of the new rows.
    table = [line.split() for line in printed.splitlines() if line.split()[:1] == ["3"]]
    assert [row[:4] for row in table[-3:]] == [["3", "old", "80000", "4"], ["3", "new", "80000", "4"],
                                               ["3", "new", "160000", "3"]]
    assert table[-3][10] == "-" and all(0 < float(row[10]) < 10 for row in table[-2:])
    # Only XLA's fusions differ: the same probabilities and posteriorgrams within float32 rounding
    # (measured 0 at this size; up to 6e-7 at full size).
    differences = re.search(r"largest \|new - old\| at hop 80000: recognizer probabilities (\S+); "
                            r"K 3 posteriorgrams (\S+)\n", printed)
    print(differences.group(0))
    assert all(float(d) <= 1e-6 for d in differences.groups())


def test_inference_benchmark_variants_alternate_old_then_new_at_each_hop(capsys):
    from benchmarks import inference
    from jointist_jax import xla_flags
    from jointist_jax.inference.windows import WindowSpec

    specs = [WindowSpec(hop=160000), WindowSpec(hop=80000)]
    assert [(name, options, spec.hop) for name, options, spec in inference.variants(specs, compare_old=True)] == [
        ("old", xla_flags.TRAINING_COMPILER_OPTIONS, 80000), ("new", xla_flags.INFERENCE_COMPILER_OPTIONS, 160000),
        ("new", xla_flags.INFERENCE_COMPILER_OPTIONS, 80000)]
    assert [(name, options, spec.hop) for name, options, spec in inference.variants(specs, compare_old=False)] == [
        ("flags", None, 160000), ("flags", None, 80000)]
    with pytest.raises(SystemExit):
        inference.main(["--compare_old", "--window_hops", "160000"])
    assert "--compare_old compares the new outputs with the old at hop 80000" in capsys.readouterr().err


# ------------------------------------------------------------------------------ conv_transpose.py
def test_benchmark_uses_real_decoder_shapes_and_runs():
    from benchmarks.conv_transpose import decoder_shapes, run

    assert decoder_shapes(2) == [((2, 16, 8, 384), 384), ((2, 32, 16, 384), 384), ((2, 64, 32, 384), 256),
                                 ((2, 128, 64, 256), 128), ((2, 256, 128, 128), 64), ((2, 512, 256, 64), 32)]
    (result,) = run([1], batch=1, repeats=1)
    assert result["output"] == (1, 32, 16, 384)
    assert all(result[name] > 0 for name in ("matmul", "einsum", "lax"))
