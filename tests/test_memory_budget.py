"""The memory budget of whole-song inference: sizes, song bytes, and the rows per call it allows."""

import numpy as np
import pytest

from jointist_jax.inference import memory

MB = memory.MB


def test_parse_size():
    assert memory.parse_size("4GB") == 4 << 30
    assert memory.parse_size("3500M") == 3500 * MB
    assert memory.parse_size("1.5g") == 3 << 29
    assert memory.parse_size(" 512 mb ") == 512 * MB
    assert memory.parse_size("1000") == 1000
    for bad in ("lots", "4TB", "0", "-1GB"):
        with pytest.raises(ValueError, match="^memory_budget"):
            memory.parse_size(bad)


def test_output_bytes_count_one_group_not_the_song():
    length = 300 * 16000
    frames = length // 160 + 1
    both = memory.output_bytes(length, num_frames=frames, transcribe=True, separate=True)
    # per instrument: its 2 stitched posteriorgrams and its stem; fixed: decoding one instrument
    assert both == memory.GroupBytes(fixed=3 * frames * 88 * 4, per_instrument=4 * (2 * frames * 88 + length))
    assert round(both.bytes_for(1) / MB) == 69  # MiB: one instrument of a 5-minute song
    assert memory.output_bytes(length, num_frames=frames, transcribe=False, separate=True) == memory.GroupBytes(
        fixed=0, per_instrument=4 * length)
    # The budget an instrument per call needs is the same for 1 and for 39 instruments: the other
    # groups' outputs are written and freed before a group starts.
    cost = memory.GroupBytes(fixed=100 * MB, per_instrument=50 * MB)
    held = 1250 * MB
    need = held + cost.bytes_for(1) + both.bytes_for(1)
    budget = int(np.ceil(need / (1 - memory.SLACK_SHARE)))
    for k in (1, 2, 39):
        assert memory.instruments_per_call(budget, held=held, outputs=both, cost=cost, num_instruments=k) == 1
        with pytest.raises(memory.MemoryBudgetError, match="too small"):
            memory.instruments_per_call(budget - MB, held=held, outputs=both, cost=cost, num_instruments=k)


def test_instruments_per_call_follow_the_budget():
    cost = memory.GroupBytes(fixed=100 * MB, per_instrument=50 * MB)
    outputs = memory.GroupBytes(fixed=20 * MB, per_instrument=30 * MB)
    held = 800 * MB

    def budget_for(instruments: float) -> int:
        # budget * (1 - slack) = held + fixed parts + instruments * (call + outputs per instrument)
        return int(np.ceil((held + cost.fixed + outputs.fixed + instruments * (cost.per_instrument +
                                                                                outputs.per_instrument))
                           / (1 - memory.SLACK_SHARE)))

    for room, expected in ((1.0, 1), (1.99, 1), (3.5, 3), (8.0, 8)):
        assert memory.instruments_per_call(budget_for(room), held=held, outputs=outputs, cost=cost,
                                           num_instruments=39) == expected
    assert memory.instruments_per_call(budget_for(50), held=held, outputs=outputs, cost=cost,
                                       num_instruments=5) == 5
    with pytest.raises(memory.MemoryBudgetError, match=r"memory_budget 1078 MB is too small: the process holds 800 MB, "
                                                       r"one instrument's outputs over the song need 50 MB .* one "
                                                       r"instrument 150 MB"):
        memory.instruments_per_call(budget_for(0.9), held=held, outputs=outputs, cost=cost, num_instruments=39)


def test_default_budget_is_held_plus_available_memory():
    held, available = memory.process_rss_bytes(), memory.available_bytes()
    assert 50 * MB < held < available + held
    budget = memory.default_budget()
    assert abs(budget - (held + memory.AVAILABLE_SHARE * available)) < 0.05 * budget


@pytest.mark.slow
def test_predictor_rows_per_call_follow_the_budget(monkeypatch):
    from flax import nnx

    import configs.joint_scratch
    from jointist_jax.inference.predictor import Predictor
    from jointist_jax import stages

    model = stages.build_model(configs.joint_scratch.get_config("runlocal"), nnx.Rngs(0))
    waveform = 0.1 * np.random.default_rng(4).standard_normal(12 * 16000).astype(np.float32)  # 2 windows
    classes = [0, 38]
    predictor = Predictor(model, batch_windows=2)
    cost = predictor.call_cost(True, len(classes))  # compiles the step for 1 and 2 instruments
    assert cost.per_instrument > 1 * MB and cost.fixed >= 0
    whole = predictor.predict(waveform, classes, separate=True)
    assert predictor.rows_per_call == 4
    outputs = memory.output_bytes(waveform.shape[0], num_frames=12 * 100 + 1, transcribe=True, separate=True)
    # What the process holds moves by ~100 MB as freed buffers go back to the system: fixed here.
    held = 700 * MB
    monkeypatch.setattr(memory, "process_rss_bytes", lambda: held)
    room = held + outputs.fixed + cost.fixed + 1.5 * (cost.per_instrument + outputs.per_instrument)
    predictor.memory_budget = int(room / (1 - memory.SLACK_SHARE))
    budgeted = predictor.predict(waveform, classes, separate=True)
    assert predictor.rows_per_call == 2  # 2 windows x 1 instrument: 2 do not fit
    np.testing.assert_allclose(budgeted.frame_output, whole.frame_output, atol=1e-5)
    np.testing.assert_allclose(budgeted.waveform, whole.waveform, atol=1e-5)
    predictor.memory_budget = int((held + cost.bytes_for(5) + outputs.bytes_for(5)) / (1 - memory.SLACK_SHARE))
    predictor.max_rows = 2  # the smaller of the two limits
    predictor.predict(waveform, classes, separate=True)
    assert predictor.rows_per_call == 2
    predictor.max_rows = None
    predictor.predict(waveform, classes, separate=True)
    assert predictor.rows_per_call == 4
    predictor.memory_budget = int((held + outputs.bytes_for(1) + cost.fixed) / (1 - memory.SLACK_SHARE))
    with pytest.raises(memory.MemoryBudgetError, match="too small"):
        predictor.predict(waveform, classes, separate=True)


def test_transcribe_flag_memory_budget():
    from jointist_jax.inference import cli

    def options(*flags):
        return cli.song_options(cli.build_parser().parse_args(["--checkpoint", "c", "--audio", "a", "--out", "o",
                                                               *flags]))

    assert options("--memory_budget", "3500MB").memory_budget == 3500 * MB
    assert options().memory_budget > memory.process_rss_bytes()  # the default: held plus available
    assert options().max_rows is None  # the budget decides
    with pytest.raises(cli.UsageError, match="^--memory_budget must be a size"):
        options("--memory_budget", "lots")
