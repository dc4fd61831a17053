"""Rendering MIDI to mono 44.1 kHz audio with the FluidSynth command-line program.

FluidSynth's fast-render mode (``-F``) writes raw little-endian float32 here, so no precision is
lost before the one gain and 16-bit quantisation applied to the whole track.

Chorus is switched off: Slakh's audio is mono, and FluidSynth's chorus is a stereo effect whose
wet signal is nearly antiphase between the channels (left/right correlation -0.9 for TimGM6mb's
string ensemble), so the mono fold-down cancels it and leaves only a comb-filtered residue.
Reverb folds down cleanly and is kept. Mono is the mean of the two channels.
Rendering is deterministic: the same MIDI file gives bit-identical samples on every run (checked
by the tests).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np

from data_pipelines.synth.errors import SynthError

RENDER_SAMPLE_RATE = 44100
SYSTEM_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
# FluidSynth's master gain; the track is normalised afterwards, so this only needs to keep the
# float render in a sensible range.
RENDER_GAIN = 0.5
INSTALL_HINT = ("install it with `make system-deps` (runs scripts/install_system_deps.sh) or "
                "`sudo apt-get install fluidsynth timgm6mb-soundfont`")


@dataclasses.dataclass(frozen=True)
class Renderer:
    """A FluidSynth binary and the soundfont it renders with."""

    binary: str
    soundfont: Path

    @property
    def plugin_name(self) -> str:
        """The metadata's ``plugin_name`` of every stem, e.g. ``fluidsynth_TimGM6mb``."""
        return f"fluidsynth_{self.soundfont.stem}"

    def render(self, midi_path: Path, out_raw: Path, num_samples: int) -> np.ndarray:
        """Renders ``midi_path``; returns ``num_samples`` mono float32 samples (cut or zero-padded).

        ``out_raw`` is a scratch file for FluidSynth's output; it is deleted afterwards.

        Raises:
          SynthError: if FluidSynth fails, with its error output.
        """
        command = [self.binary, "-ni", "-q", "-g", str(RENDER_GAIN), "-r", str(RENDER_SAMPLE_RATE),
                   "-o", "synth.chorus.active=0", "-o", "synth.cpu-cores=1",
                   "-T", "raw", "-O", "float", "-E", "little", "-F", str(out_raw),
                   str(self.soundfont), str(midi_path)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not out_raw.exists():
            raise SynthError(f"fluidsynth failed on {midi_path} (exit code {result.returncode}): "
                             f"{(result.stderr or result.stdout).strip()[-2000:]}")
        stereo = np.fromfile(out_raw, dtype="<f4")
        out_raw.unlink()
        mono = stereo[: stereo.size // 2 * 2].reshape(-1, 2).mean(axis=1, dtype=np.float64)
        audio = np.zeros(num_samples, dtype=np.float32)
        n = min(num_samples, mono.size)
        audio[:n] = mono[:n]
        return audio


def find_fluidsynth() -> str:
    """Path of the ``fluidsynth`` program.

    Raises:
      SynthError: if it is not on PATH, saying how to install it.
    """
    binary = shutil.which("fluidsynth")
    if binary is None:
        raise SynthError(f"the fluidsynth program was not found on PATH; {INSTALL_HINT}")
    return binary


def bundled_soundfont() -> Path | None:
    """The TimGM6mb.sf2 shipped inside the pretty_midi package, if it is there."""
    import pretty_midi  # only its location matters here

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


def resolve_soundfont(requested: str | Path | None) -> Path:
    """The soundfont to render with: ``requested``, else the system TimGM6mb, else pretty_midi's.

    Raises:
      SynthError: naming the missing file, or the places searched when none was requested.
    """
    if requested is not None:
        path = Path(requested).expanduser()
        if not path.is_file():
            raise SynthError(f"--soundfont {path} does not exist or is not a file")
        return path.resolve()
    if SYSTEM_SOUNDFONT.is_file():
        return SYSTEM_SOUNDFONT
    bundled = bundled_soundfont()
    if bundled is not None:
        return bundled
    raise SynthError(f"no soundfont found: neither {SYSTEM_SOUNDFONT} nor pretty_midi's bundled "
                     f"TimGM6mb.sf2 exists; pass --soundfont PATH or {INSTALL_HINT}")


def make_renderer(soundfont: str | Path | None) -> Renderer:
    """A :class:`Renderer` with the resolved soundfont; fails early if anything is missing."""
    return Renderer(find_fluidsynth(), resolve_soundfont(soundfont))
