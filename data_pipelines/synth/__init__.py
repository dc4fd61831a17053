"""The synthetic Slakh-format dataset renderer (CLI: :mod:`data_pipelines.synth_slakh`).

Modules, one job each:

* :mod:`~data_pipelines.synth.compose`: song composition (pure, seeded);
* :mod:`~data_pipelines.synth.midi`: stems from songs or user MIDI files, Slakh's MIDI files;
* :mod:`~data_pipelines.synth.fluidsynth`: FluidSynth rendering to mono float audio;
* :mod:`~data_pipelines.synth.layout`: Slakh's folders, metadata, gain and 16-bit FLAC;
* :mod:`~data_pipelines.synth.track`: one track, written atomically;
* :mod:`~data_pipelines.synth.plan`: splits and track numbering;
* :mod:`~data_pipelines.synth.dataset`: a whole run (resume, workers, summary).
"""

from data_pipelines.synth.dataset import Options, Summary, synthesize
from data_pipelines.synth.errors import SynthError

__all__ = ["Options", "Summary", "SynthError", "synthesize"]
