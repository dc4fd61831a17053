"""``benchmarks/accelerator_suite.py`` and ``benchmarks/profile_summary.py``: the largest-batch
search, throughput and MFU arithmetic, the budget, the profile parser on a CPU trace, and one
``--tiny`` run on CPU (no timing assertions)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import accelerator_suite as suite_module
from benchmarks import profile_summary


# ------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("kind, bf16, fp32", [
    ("NVIDIA H100 80GB HBM3", 989.4, 494.7), ("NVIDIA H100 PCIe", 756.0, 378.0), ("NVIDIA H100 NVL", 835.5, 417.5),
    ("NVIDIA H200", 989.4, 494.7), ("NVIDIA H200 NVL", 835.5, 417.5), ("NVIDIA GH200 480GB", 989.4, 494.7)])
def test_peak_tflops_from_the_device_kind(kind, bf16, fp32):
    assert suite_module.peak_tflops_for(kind, "bfloat16") == bf16
    assert suite_module.peak_tflops_for(kind, "float32") == fp32


def test_unknown_devices_have_no_peak():
    assert suite_module.peak_tflops_for("cpu", "bfloat16") is None
    assert suite_module.peak_tflops_for("NVIDIA A100-SXM4-80GB", "float32") is None


def test_out_of_memory_errors_are_recognised():
    assert suite_module.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))
    assert suite_module.is_out_of_memory(ValueError("CUDA_ERROR_OUT_OF_MEMORY: out of memory"))
    assert not suite_module.is_out_of_memory(ValueError("INVALID_ARGUMENT: shapes differ"))


def test_throughput_and_mfu_arithmetic():
    record = {"global_batch": 16, "batch": 8, "devices": 2, "gflops_matmul": 3000.0}
    suite_module.add_throughput(record, 0.5, 100.0)
    assert record["examples_per_s"] == 32.0 and record["examples_per_s_per_device"] == 16.0
    assert record["tflops_per_s"] == pytest.approx(6.0)
    assert record["mfu"] == pytest.approx(3000e9 / 0.5 / (2 * 100e12))  # peak of both devices
    assert suite_module.add_throughput(dict(record), 0.5, None)["mfu"] is None


# ------------------------------------------------------------------------------ largest batch
def memory_fits(limit, per_row=10, fixed=5):
    calls = []

    def fits(batch):
        calls.append(batch)
        return fixed + per_row * batch <= limit

    return fits, calls


@pytest.mark.parametrize("limit, expected", [(5 + 10 * 37, 37), (5 + 10 * 2, 2), (5 + 10 * 200, 200)])
def test_largest_fitting_doubles_then_bisects_to_the_tolerance(limit, expected):
    fits, calls = memory_fits(limit)
    search = suite_module.largest_fitting(fits, start=2, tolerance=0.1, max_batch=4096)
    assert search.complete and search.stopped == "converged"
    assert search.largest <= expected < search.smallest_failing
    assert search.smallest_failing - search.largest <= max(1, int(0.1 * search.largest))
    # Doubling from 2 until a failure, then bisection: never a batch above twice the answer.
    doubling = [2 * 2**i for i in range(len(calls)) if 2 * 2**i <= 2 * expected][: len(calls)]
    assert calls[: len(doubling)] == doubling
    assert max(calls) <= 2 * expected
    assert [p["batch"] for p in search.probes] == calls


def test_largest_fitting_with_zero_tolerance_is_exact():
    fits, calls = memory_fits(5 + 10 * 37)
    search = suite_module.largest_fitting(fits, fitting=32, start=2, tolerance=0.0)
    assert (search.largest, search.smallest_failing) == (37, 38)
    assert calls[0] == 64 and 2 not in calls  # starts from the known fitting batch


def test_largest_fitting_uses_known_results_and_the_guess_first():
    fits, calls = memory_fits(5 + 10 * 100)
    search = suite_module.largest_fitting(fits, fitting=32, failing=128, guess=96, tolerance=0.1)
    assert calls[0] == 96
    assert 32 not in calls and 128 not in calls
    assert search.largest <= 100 < search.smallest_failing <= 128


def test_an_accurate_guess_settles_the_search_in_two_probes():
    fits, calls = memory_fits(5 + 10 * 110)
    search = suite_module.largest_fitting(fits, fitting=32, guess=100, tolerance=0.125)
    assert calls == [100, 112] and (search.largest, search.smallest_failing) == (100, 112) and search.complete


def test_largest_fitting_stops_at_max_batch_and_when_nothing_fits():
    fits, _ = memory_fits(10**9)
    search = suite_module.largest_fitting(fits, start=2, max_batch=64)
    assert search.largest == 64 and search.smallest_failing is None and search.complete
    fits, calls = memory_fits(10)
    search = suite_module.largest_fitting(fits, start=2)
    assert search.largest == 0 and search.stopped == "nothing fits" and calls == [2, 1]


def test_largest_fitting_stops_when_the_budget_refuses():
    fits, calls = memory_fits(5 + 10 * 500)
    allowed = iter([None, None, None, "budget: out of time"])
    search = suite_module.largest_fitting(fits, start=2, may_probe=lambda: next(allowed))
    assert calls == [2, 4, 8] and search.largest == 8
    assert not search.complete and search.stopped == "budget: out of time"


def test_predicted_batch_extrapolates_a_line_through_the_largest_points():
    points = [(2, 1e9 + 2e8), (8, 1e9 + 8e8), (32, 1e9 + 32e8)]
    # 0.9 x 80e9 = 72e9 = 1e9 + 1e8 x b  ->  b = 710, rounded down to a multiple of 8.
    assert suite_module.predicted_batch(points, 80e9) == 704
    assert suite_module.predicted_batch(points[:1], 80e9) is None
    assert suite_module.predicted_batch([(2, 5.0), (8, 5.0)], 80e9) is None


# ------------------------------------------------------------------------------ GRU unroll
def test_gru_unroll_sets_every_gru_of_a_built_model_and_restores_the_factory():
    from configs import transcription
    from jointist_jax.models import gru
    from jointist_jax import stages

    config = transcription.get_config("runlocal")
    original = stages.build_model
    with suite_module.gru_unroll(4):
        model = stages.build_model(config, nnx.Rngs(0))
    grus = [node for _, node in nnx.iter_graph(model) if isinstance(node, gru.BiGRU)]
    assert len(grus) >= 2 and all(g.unroll == 4 for g in grus)
    assert stages.build_model is original
    plain = stages.build_model(config, nnx.Rngs(0))
    assert all(node.unroll == gru.DEFAULT_UNROLL for _, node in nnx.iter_graph(plain) if isinstance(node, gru.BiGRU))


# ------------------------------------------------------------------------------ profile parser
def test_exclusive_durations_subtract_enclosed_events_on_the_same_track():
    ev = profile_summary.OpEvent
    events = [ev("while.1", None, ("p", "a"), 0.0, 100.0), ev("body.1", None, ("p", "a"), 10.0, 30.0),
              ev("body.2", None, ("p", "a"), 50.0, 20.0), ev("other.1", None, ("p", "b"), 20.0, 40.0),
              ev("after", None, ("p", "a"), 120.0, 5.0)]
    assert profile_summary.exclusive_durations(events) == [50.0, 30.0, 20.0, 40.0, 5.0]


def test_op_events_from_annotations_and_device_planes_win_over_host_threads():
    assert profile_summary._op_of({"hlo_op": "fusion.1", "hlo_module": "jit_f"}) == ("fusion.1", "jit_f")
    assert profile_summary._op_of({"kernel_annotation": "fusion.2:#hlo_op=fusion.2,hlo_module=jit_g#"}) == (
        "fusion.2", "jit_g")
    assert profile_summary._op_of({"correlation_id": 7}) == (None, None)
    ev = profile_summary.OpEvent
    host = ev("fusion.1", None, ("/host:CPU", "python"), 0.0, 1.0)
    stream = ev("fusion.1", None, ("/device:GPU:0", "Stream #13(Compute)"), 0.0, 5.0)
    derived = ev("fusion.1", None, ("/device:GPU:0", "XLA Ops"), 0.0, 5.0)
    assert profile_summary._select_tracks([host, stream, derived]) == [stream]
    assert profile_summary._select_tracks([host, derived]) == [derived]
    assert profile_summary._select_tracks([host]) == [host]


def _profiled_function(x, w, k):
    def step(c, _):
        return jnp.tanh(c @ w), None

    c = jax.lax.scan(step, x, None, length=100)[0]
    spectrum = jnp.abs(jnp.fft.rfft(c, axis=-1))
    image = jax.lax.conv_general_dilated(c[None, :, :, None], k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with jax.named_scope(profile_summary.OPTIMIZER_SCOPE):
        update = jnp.sqrt(w * w + 1.0) * 0.5
    return spectrum.sum() + image.sum(), update


def test_profile_summary_of_a_cpu_trace_splits_time_into_categories(tmp_path):
    args = (jnp.ones((32, 128)), jnp.full((128, 128), 0.01), jnp.ones((5, 5, 1, 8)))
    compiled = jax.jit(_profiled_function).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        for _ in range(2):
            jax.block_until_ready(compiled(*args))
    hlo = compiled.as_text()

    _, ops = profile_summary.parse_hlo(hlo)
    categories = profile_summary.categorize(ops)
    kinds = {(ops[n].opcode, c) for n, c in categories.items()}
    assert ("while", "while_loop") in kinds and ("fft", "fft") in kinds and ("convolution", "convolution") in kinds
    assert any(c == "optimizer" for c in categories.values())

    summary = profile_summary.summarize(tmp_path, hlo, steps=2, top=5)
    shares = summary["category_share"]
    assert set(shares) == set(profile_summary.CATEGORIES)
    assert sum(shares.values()) == pytest.approx(1.0) and summary["unmatched_share"] == 0.0
    assert shares["while_loop"] > 0 and shares["convolution"] > 0 and shares["fft"] > 0
    assert len(summary["top_ops"]) == 5 and summary["top_ops"][0]["share"] >= summary["top_ops"][-1]["share"]
    assert summary["op_ms_per_step"] == pytest.approx(sum(summary["category_ms_per_step"].values()))
    # The xplane and the perfetto JSON hold the same op events.
    xplane, perfetto = profile_summary.find_trace_files(tmp_path)
    from_xplane = profile_summary.events_from_xplane(xplane)
    from_json = profile_summary.events_from_perfetto(perfetto)
    assert len(from_xplane) == len(from_json) > 0
    assert sum(e.duration_us for e in from_xplane) == pytest.approx(sum(e.duration_us for e in from_json), rel=1e-3)
    assert "while_loop" in profile_summary.format_summary(summary) and not summary["device_time"]


def test_profile_summary_without_a_trace_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        profile_summary.summarize(tmp_path, "HloModule m\n", steps=1)


# ------------------------------------------------------------------------------ the plan, stubbed
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def stub_steps(monkeypatch, clock, *, per_row_bytes=2**20, compile_s=10.0):
    """Replaces compiling and running with a memory model: bytes = 1 MiB + per_row x batch (half
    with remat); each compile takes ``compile_s`` of the fake clock, each timed run 2 s."""

    def prepare(self, case, dtype, batch, *, remat, unroll=None):
        clock.now += compile_s
        total = 2**20 + per_row_bytes * batch // (2 if remat else 1)
        record = {"case": case, "dtype": dtype, "batch": batch, "global_batch": batch, "remat": remat,
                  "gru_unroll": unroll or 1, "devices": 1, "stage": case, "gflops_matmul": 10.0 * batch,
                  "compile_s": compile_s, "xla_memory": {"total_bytes": total, "alias_bytes": 2**20},
                  "wall_s": compile_s}
        if total > self.memory_limit():
            record.update(fits=False, reason="XLA memory analysis over the limit")
            return None, record
        return suite_module.Prepared(None, None, None), record

    def execute(self, prepared, record, *, steps, profile_dir=None):
        record["fits"] = True
        if steps and profile_dir is None:
            clock.now += 2.0
            suite_module.add_throughput(record, 0.01 * record["batch"],
                                        self.payload["peak_tflops"][record["dtype"]]["tflops"])
            self.wall_by_case[record["case"]] = record["wall_s"] + 2.0
        return record

    monkeypatch.setattr(suite_module.Suite, "prepare", prepare)
    monkeypatch.setattr(suite_module.Suite, "execute", execute)


def test_plan_measures_searches_retries_with_remat_and_skips_past_the_budget(tmp_path, monkeypatch, capsys):
    clock = FakeClock()
    stub_steps(monkeypatch, clock)
    out = tmp_path / "suite.json"
    # 40.5 MiB: batches up to 39 fit without remat, 79 with it.
    payload = suite_module.main(["--out", str(out), "--cases", "ts_train,ir_train", "--batches", "2,8,32,64,max",
                                 "--memory_limit_gb", str(40.5 / 1024), "--peak_tflops", "100", "--no_profile",
                                 "--search_tolerance", "0", "--budget_seconds", "300"], clock=clock)
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload, default=str))
    results = payload["results"]
    first = results[0]
    assert (first["case"], first["dtype"], first["batch"], first["role"]) == ("ts_train", "bfloat16", 32, "fixed")
    assert first["examples_per_s"] == pytest.approx(32 / first["step_s"])
    assert first["mfu"] == pytest.approx(first["gflops_matmul"] * 1e9 / first["step_s"] / 100e12)
    # 64 does not fit: retried with remat, which fits.
    oom = [r for r in results if r["batch"] == 64 and r["case"] == "ts_train" and r["dtype"] == "bfloat16"]
    assert [(r["remat"], r["fits"], r["role"]) for r in oom] == [(False, False, "fixed"), (True, True, "remat_retry")]
    (search, *_) = payload["searches"]
    assert (search["case"], search["largest_fitting"], search["smallest_not_fitting"]) == ("ts_train", 39, 40)
    assert search["known_fitting"] == 32 and search["known_failing"] == 64
    # One measured batch and the donated state at batch 0: (0.9 x 40.5 - 1) MiB / 1 MiB per row = 35,
    # rounded down to a multiple of 8.
    assert search["guess"] == 32
    assert all(p["fits"] == (p["xla_total_bytes"] <= 40.5 * 2**20) for p in search["probes"])
    largest = [r for r in results if r["role"] == "largest" and r["case"] == "ts_train"]
    assert largest[0]["batch"] == 39 and largest[0]["step_s"] > 0
    assert any(r["role"] == "remat_retry" and r["batch"] == 40 for r in results)
    # The budget ran out: later items are recorded as skipped, and the JSON says so.
    assert payload["skipped"] and not payload["complete"]
    assert all("budget" in s["reason"] or s["reason"].startswith("no --data_dir") for s in payload["skipped"])
    assert any("float32" in s["item"] for s in payload["skipped"])
    assert payload["budget"]["used_s"] <= 300 + 12  # an item starts only if its estimate fits
    printed = capsys.readouterr().out
    assert "| card | jax | case | batch | dtype | remat | step s | examples/s | MFU % |" in printed
    assert "39 (largest)" in payload["table_markdown"] and "does not fit" in payload["table_markdown"]


def test_a_run_killed_midway_leaves_valid_json_of_what_it_finished(tmp_path, monkeypatch):
    clock = FakeClock()
    stub_steps(monkeypatch, clock)
    stubbed_prepare = suite_module.Suite.prepare
    calls = []

    def prepare_then_die(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a timeout's signal would end the process
        return stubbed_prepare(self, *args, **kwargs)

    monkeypatch.setattr(suite_module.Suite, "prepare", prepare_then_die)
    out = tmp_path / "suite.json"
    with pytest.raises(KeyboardInterrupt):
        suite_module.main(["--out", str(out), "--cases", "ts_train", "--dtypes", "bfloat16", "--batches", "32,64,128",
                           "--memory_limit_gb", "1", "--no_profile"], clock=clock)
    written = json.loads(out.read_text())
    assert [r["batch"] for r in written["results"]] == [32, 64] and not written["complete"]
    assert "| ts_train | 64 |" in written["table_markdown"]
    assert not (tmp_path / "suite.json.tmp").exists()


def test_bad_flags_are_rejected(tmp_path):
    out = str(tmp_path / "x.json")
    for argv in (["--batches", "2,huge"], ["--cases", "nope"], ["--steps", "0"], ["--peak_tflops", "-1"],
                 ["--cases", "ir_train"]):  # the default profile case is not among the cases
        with pytest.raises(SystemExit):
            suite_module.parse_args(["--out", out] + argv)


# ------------------------------------------------------------------------------ a real tiny run
@pytest.mark.slow
def test_tiny_run_on_cpu_writes_every_number(tmp_path, tiny_tfds_dir, capsys):
    """Compiles the tiny recognizer's train step at batches 2 and 4 (and 4 with remat): about a
    minute on a 2-core CPU when the compilation cache is cold."""
    out = tmp_path / "tiny.json"
    argv = ["--tiny", "--cases", "ir_train", "--dtypes", "float32", "--batches", "2,max", "--max_batch", "4",
            "--search_tolerance", "1", "--steps", "2", "--peak_tflops", "0.5", "--profile_case", "ir_train",
            "--data_dir", str(tiny_tfds_dir), "--input_clips", "8", "--input_batches", "2", "--out", str(out)]
    # A memory limit between the compiled steps' sizes at batches 2 and 4.
    calibration = suite_module.Suite(suite_module.parse_args(argv), suite_module.Budget(60.0))
    sizes = [calibration.prepare("ir_train", "float32", b, remat=False)[1]["xla_memory"]["total_bytes"] for b in (2, 4)]
    assert sizes[0] < sizes[1]
    limit = (sizes[0] + sizes[1]) / 2
    payload = suite_module.main(argv + ["--memory_limit_gb", str(limit / 2**30)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload, default=str))

    (search,) = payload["searches"]
    assert (search["largest_fitting"], search["smallest_not_fitting"], search["complete"]) == (2, 4, True)
    assert [p["batch"] for p in search["probes"]] == [2, 4]
    timed = [r for r in payload["results"] if r.get("step_s") and not r["remat"]]
    assert {r["role"] for r in timed} == {"largest", "fixed"}
    for r in timed:
        assert r["batch"] == 2 and r["fits"] and np.isfinite(r["loss"]) and len(r["step_s_all"]) == 2
        assert r["examples_per_s"] == pytest.approx(2 / r["step_s"])
        assert r["mfu"] == pytest.approx(r["gflops_matmul"] * 1e9 / r["step_s"] / 0.5e12)
        assert r["gflops_matmul"] > 0 and r["compile_s"] > 0
    fixed = next(r for r in timed if r["role"] == "fixed")
    assert fixed["compile_cached"]  # the search's probe at 2 was compiled once
    retry = next(r for r in payload["results"] if r["role"] == "remat_retry")
    assert retry["batch"] == 4 and retry["remat"]

    profile = payload["profile"]
    assert "error" not in profile, profile.get("error")
    assert profile["batch"] == 2 and profile["top_ops"]
    assert 0.99 < sum(profile["category_share"].values()) <= 1.0 + 1e-9
    assert profile["category_share"]["convolution"] > 0 and profile["category_share"]["optimizer"] > 0

    pipe = payload["input_pipeline"]
    assert pipe["clips"] == 8 and pipe["clips_per_s"] > 0
    comparison = payload["input_vs_step"]
    assert comparison["input_over_step"] == pytest.approx(pipe["clips_per_s"] / comparison["step"]["examples_per_s"])
    printed = capsys.readouterr().out
    assert "| cpu | " in printed and "2 (largest)" in printed and "while_loop" in printed
