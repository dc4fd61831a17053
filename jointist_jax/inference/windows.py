"""Long audio: fixed 10-s windows with 50 % overlap, and centre stitching (docs/deviations.md 15).

Splitting. A song of L samples is cut into ``N = 1 + ceil(max(L - W, 0) / H)`` windows of
``W = 160000`` samples starting at ``i * H`` (``H = 80000``, the reference's 5-s hop); the tail is
zero-padded, so every window has the same shape and one compiled function serves songs of any
length. A song of 10 s or less is one (padded) window. A larger hop (up to ``W``: no overlap,
``WindowSpec(hop=160000)``) runs fewer windows (docs/deviations.md 38).

Stitching. Every output position (a frame or a sample) is taken from the window in which it
is most central. With a window step of ``hop`` positions (500 frames or 80000 samples) and a
margin ``m = (window - hop) / 2`` (the part of each side of a window that its neighbour covers
more centrally: 250 frames or 40000 samples at 50 % overlap, 0 without overlap), window ``i``
owns the global positions

    [i * hop + m, (i + 1) * hop + m)

except that the first window also owns everything before its range (it keeps its start) and
the last window everything after (it keeps its end). Equivalently, position ``p`` comes from
window ``clip((p - m) // hop, 0, N - 1)`` at local index ``p - i * hop``. The output has
the length of a single pass over the whole song: ``floor(L / 160) + 1`` frames (like one
log-mel of the whole song) or ``L`` samples. Each window owns a non-empty range and never needs
a local index beyond its end, for any L >= 1 (tested for L < W, L = W, L = W + 1, 25 s, ...).

This replaces the reference's ``[seg0[:750], mid[250:750], last[250:]]`` concatenation, which
duplicates frames 250-499 into 750-999 when there is a single window (docs/reference.md §10.9).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jointist_jax.music import HOP_SAMPLES, SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Window geometry in samples and feature frames (defaults: the reference's 10 s / 5 s / hop 160).

    ``hop`` may be anything from a multiple of ``frame_hop`` up to ``window`` (no overlap) that
    leaves an even number of frames between the windows' ends, so the margin is whole frames.
    """

    window: int = 10 * SAMPLE_RATE
    hop: int = 80000
    frame_hop: int = HOP_SAMPLES

    def __post_init__(self):
        if not 0 < self.hop <= self.window:
            raise ValueError(f"WindowSpec: hop ({self.hop}) must be in 1..window ({self.window})")
        if self.window % self.frame_hop or self.hop % self.frame_hop or (self.window - self.hop) % (2 * self.frame_hop):
            raise ValueError(f"WindowSpec: window ({self.window}) and hop ({self.hop}) must be multiples of "
                             f"frame_hop ({self.frame_hop}) whose difference is a multiple of 2 * frame_hop "
                             f"({2 * self.frame_hop}) for centre stitching")

    @property
    def frames_per_window(self) -> int:
        """Feature frames of one window (centred frames, T = W // frame_hop + 1; 1001)."""
        return self.window // self.frame_hop + 1

    @property
    def frames_per_hop(self) -> int:
        """Frames between consecutive windows (500)."""
        return self.hop // self.frame_hop

    @property
    def margin(self) -> int:
        """Samples at each inner side of a window that a neighbour owns: (window - hop) / 2 (40000)."""
        return (self.window - self.hop) // 2

    @property
    def frames_per_margin(self) -> int:
        """:attr:`margin` in frames (250)."""
        return self.margin // self.frame_hop

    def num_windows(self, length: int) -> int:
        """Number of windows for a song of ``length`` samples (>= 1)."""
        if length < 1:
            raise ValueError(f"audio length must be >= 1 sample, got {length}")
        return 1 + -(-max(length - self.window, 0) // self.hop)

    def num_frames(self, length: int) -> int:
        """Frames of the stitched posteriorgram: ``floor(L / frame_hop) + 1``."""
        return length // self.frame_hop + 1


def split_windows(waveform: np.ndarray, spec: WindowSpec = WindowSpec()) -> np.ndarray:
    """(N, W) float32 windows of a mono song (L,), zero-padded at the end."""
    waveform = np.asarray(waveform, dtype=np.float32)
    return window_range(waveform, spec, 0, spec.num_windows(waveform.shape[0]) if waveform.ndim == 1 else 1)


def window_range(waveform: np.ndarray, spec: WindowSpec, first: int, count: int, rows: int | None = None) -> np.ndarray:
    """(rows, W) float32 windows ``first .. first + count - 1`` of a mono song (L,), the song
    zero-padded past its end and the rows past ``count`` (``rows`` defaults to ``count``) silent:
    one batch of windows without cutting the whole song."""
    if waveform.ndim != 1:
        raise ValueError(f"split_windows takes a mono waveform (L,), got shape {waveform.shape}")
    out = np.zeros((count if rows is None else rows, spec.window), np.float32)
    for row, index in enumerate(range(first, first + count)):
        part = waveform[index * spec.hop:index * spec.hop + spec.window]
        out[row, :part.shape[0]] = part
    return out


def owned_range(index: int, num_windows: int, hop: int, total: int, margin: int | None = None) -> tuple[int, int]:
    """Global [start, stop) positions that window ``index`` contributes (see the module docstring);
    ``margin`` defaults to ``hop // 2`` (50 % overlap)."""
    if not 0 <= index < num_windows:
        raise ValueError(f"window index {index} out of range for {num_windows} windows")
    if margin is None:
        margin = hop // 2
    start = 0 if index == 0 else index * hop + margin
    stop = total if index == num_windows - 1 else (index + 1) * hop + margin
    return min(start, total), min(stop, total)


def stitch_into(out: np.ndarray, window_values: np.ndarray, index: int, num_windows: int, hop: int,
                axis: int = 0, margin: int | None = None) -> None:
    """Writes window ``index``'s owned part of ``window_values`` into ``out`` along ``axis``.

    ``out`` holds the whole song's positions on ``axis``; ``window_values`` one window's;
    ``margin`` as in :func:`owned_range`. Lets a caller stitch batch by batch without keeping every
    window in memory.
    """
    total = out.shape[axis]
    start, stop = owned_range(index, num_windows, hop, total, margin)
    local_start, local_stop = start - index * hop, stop - index * hop
    if local_stop > window_values.shape[axis]:
        raise ValueError(f"window {index} has {window_values.shape[axis]} positions but must provide "
                         f"local positions up to {local_stop} (output length {total})")
    target = [slice(None)] * out.ndim
    source = [slice(None)] * window_values.ndim
    target[axis] = slice(start, stop)
    source[axis] = slice(local_start, local_stop)
    out[tuple(target)] = window_values[tuple(source)]


def stitch(windows: np.ndarray, total: int, hop: int, axis: int = 1, margin: int | None = None) -> np.ndarray:
    """Stitches per-window values (window axis 0, positions on ``axis``) into ``total`` positions."""
    windows = np.asarray(windows)
    n = windows.shape[0]
    out_shape = list(windows.shape[1:])
    out_shape[axis - 1] = total
    out = np.zeros(out_shape, windows.dtype)
    for i in range(n):
        stitch_into(out, windows[i], i, n, hop, axis=axis - 1, margin=margin)
    return out
