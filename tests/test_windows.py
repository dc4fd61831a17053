"""10-s windows and centre stitching (docs/deviations.md 15): exact for any song length."""

import numpy as np
import pytest

from jointist_jax.inference.windows import WindowSpec, owned_range, split_windows, stitch, stitch_into

SPEC = WindowSpec()
NO_OVERLAP = WindowSpec(hop=160000)
W = SPEC.window

LENGTHS = [1, 159, 16000, W - 1, W, W + 1, W + 160, 3 * W // 2, 3 * W // 2 + 1, 25 * 16000, 60 * 16000 + 7]


@pytest.mark.parametrize("spec", [SPEC, NO_OVERLAP, WindowSpec(hop=120000)], ids=["half", "none", "quarter"])
@pytest.mark.parametrize("length", LENGTHS)
def test_frame_stitch_reproduces_the_frame_index(length, spec):
    n = spec.num_windows(length)
    # Window i's "posteriorgram" is its global frame index i * hop + j at local frame j.
    windows = (np.arange(n)[:, None] * spec.frames_per_hop + np.arange(spec.frames_per_window)[None, :])
    total = spec.num_frames(length)
    assert total == length // 160 + 1
    np.testing.assert_array_equal(stitch(windows, total, spec.frames_per_hop, margin=spec.frames_per_margin),
                                  np.arange(total))


@pytest.mark.parametrize("spec", [SPEC, NO_OVERLAP, WindowSpec(hop=120000)], ids=["half", "none", "quarter"])
@pytest.mark.parametrize("length", LENGTHS)
def test_sample_split_then_stitch_is_identity(length, spec):
    signal = np.arange(1, length + 1, dtype=np.float64)
    windows = split_windows(signal, spec)
    assert windows.shape == (spec.num_windows(length), W)
    np.testing.assert_array_equal(stitch(windows, length, spec.hop, margin=spec.margin), signal.astype(np.float32))


def test_window_counts_and_padding():
    assert [SPEC.num_windows(n) for n in (1, W, W + 1, W + SPEC.hop, W + SPEC.hop + 1)] == [1, 1, 2, 2, 3]
    windows = split_windows(np.ones(W + 1), SPEC)
    assert windows[1, :SPEC.hop + 1].sum() == SPEC.hop + 1 and windows[1, SPEC.hop + 1:].sum() == 0
    with pytest.raises(ValueError, match=">= 1 sample"):
        SPEC.num_windows(0)
    with pytest.raises(ValueError, match="mono"):
        split_windows(np.zeros((2, 10)), SPEC)


def test_each_position_comes_from_its_most_central_window():
    # 25 s: 4 windows. Position p's window is the one whose centre (i * hop + hop) is nearest.
    length = 25 * 16000
    n = SPEC.num_windows(length)
    owner = np.zeros(length, int)
    for i in range(n):
        start, stop = owned_range(i, n, SPEC.hop, length)
        owner[start:stop] = i
    centres = np.arange(n) * SPEC.hop + SPEC.hop
    nearest = np.argmin(np.abs(np.arange(length)[:, None] + 0.5 - centres[None, :]), axis=1)
    np.testing.assert_array_equal(owner, nearest)


@pytest.mark.parametrize("spec", [SPEC, NO_OVERLAP, WindowSpec(hop=120000)], ids=["half", "none", "quarter"])
def test_each_position_comes_from_its_most_central_window_at_any_hop(spec):
    length = 37 * 16000 + 3
    n = spec.num_windows(length)
    owner = np.full(length, -1)
    for i in range(n):
        start, stop = owned_range(i, n, spec.hop, length, spec.margin)
        owner[start:stop] = i
    centres = np.arange(n) * spec.hop + spec.window // 2
    nearest = np.argmin(np.abs(np.arange(length)[:, None] + 0.5 - centres[None, :]), axis=1)
    np.testing.assert_array_equal(owner, nearest)


def test_no_overlap_runs_about_half_the_windows():
    # 60 s: 11 windows at the reference's 5-s hop, 6 without overlap.
    assert (SPEC.num_windows(60 * 16000), NO_OVERLAP.num_windows(60 * 16000)) == (11, 6)
    assert (NO_OVERLAP.margin, NO_OVERLAP.frames_per_margin, SPEC.margin, SPEC.frames_per_margin) == (0, 0, 40000, 250)


def test_ranges_match_the_reference_middle_segments():
    # The reference keeps seg0[:750], middle[250:750], last[250:] (frames).
    n, hop, total = 4, 500, 2001
    assert owned_range(0, n, hop, total) == (0, 750)
    assert owned_range(1, n, hop, total) == (750, 1250)
    assert owned_range(3, n, hop, total) == (1750, 2001)


def test_stitch_into_multi_axis_and_too_short_window():
    out = np.zeros((2, 1001, 3))
    stitch_into(out, np.ones((2, 1001, 3)), 0, 1, 500, axis=1)
    assert out.sum() == 2 * 1001 * 3
    with pytest.raises(ValueError, match="local positions up to"):
        stitch_into(np.zeros(1200), np.ones(1000), 0, 1, 500)


def test_spec_validation():
    with pytest.raises(ValueError, match="multiples of frame_hop"):
        WindowSpec(window=1000, hop=300)
    with pytest.raises(ValueError, match="multiple of 2 \\* frame_hop"):
        WindowSpec(hop=80160)  # a margin of half a frame
    with pytest.raises(ValueError, match="must be in 1..window"):
        WindowSpec(hop=160320)
