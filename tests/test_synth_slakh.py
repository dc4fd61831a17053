"""Tests of the synthetic Slakh-format renderer (data_pipelines/synth_slakh.py and synth/)."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from data_pipelines import synth_slakh
from data_pipelines.synth import compose, dataset, fluidsynth, layout, plan
from data_pipelines.synth import midi as midi_lib
from data_pipelines.synth.errors import SynthError
from jointist_jax import instruments

SECONDS = 2.0
SPLITS = "train=1,validation=1,test=1"
SPEC_TSV = (Path(__file__).resolve().parents[1] / "jointist_jax" / "resources"
            / "gm_program_to_class.tsv")
TOP_KEYS = {"UUID", "audio_dir", "midi_dir", "normalized", "overall_gain", "target_peak",
            "sample_rate", "stems", "composition"}
STEM_KEYS = {"program_num", "is_drum", "inst_class", "plugin_name", "midi_program_name",
             "midi_saved", "audio_rendered"}


def _cli(argv: list[str]) -> str:
    """Runs the CLI, returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert synth_slakh.main(argv) == 0
    return out.getvalue()


def _args(out: Path, seed: int = 0, splits: str = SPLITS, workers: int = 1) -> list[str]:
    tracks = sum(int(s.split("=")[1]) for s in splits.split(","))
    return ["--out", str(out), "--tracks", str(tracks),
            "--seconds", str(SECONDS), "--seed", str(seed), "--splits", splits,
            "--workers", str(workers)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Three composed 2-s tracks (one per split), rendered once through the CLI with 2 workers."""
    out = tmp_path_factory.mktemp("synth") / "data"
    printed = _cli(_args(out, workers=2))
    return out, printed


def _tracks(out: Path) -> list[Path]:
    return sorted(out.glob("*/Track*"), key=lambda p: p.name)


def _read_int16(path: Path) -> np.ndarray:
    samples, _ = sf.read(str(path), dtype="int16")
    return samples


# --- layout, metadata, audio -------------------------------------------------------------------

def test_layout_follows_slakh(rendered):
    out, printed = rendered
    tracks = _tracks(out)
    assert [f"{t.parent.name}/{t.name}" for t in tracks] == [
        "train/Track00001", "validation/Track00002", "test/Track00003"]
    for track in tracks:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        names = sorted(meta["stems"])
        assert names == [f"S{i:02d}" for i in range(len(names))]
        assert sorted(p.name for p in (track / "stems").iterdir()) == [f"{n}.flac" for n in names]
        assert sorted(p.name for p in (track / "MIDI").iterdir()) == [f"{n}.mid" for n in names]
        assert {p.name for p in track.iterdir()} == {"mix.flac", "stems", "MIDI", "all_src.mid",
                                                     "metadata.yaml"}
    assert sorted(p.name for p in out.iterdir()) == ["synth_slakh.yaml", "test", "train",
                                                     "validation"]
    assert "synth-slakh: 3 tracks" in printed and "train 1, validation 1, test 1" in printed
    assert "6.0 s of audio" in printed


def test_metadata_keys_and_values(rendered):
    out, _ = rendered
    with open(SPEC_TSV) as f:
        family = {int(r["gm_program"]): r["gm_family"] for r in csv.DictReader(f, delimiter="\t")}
    seen_drums = False
    for track in _tracks(out):
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        assert set(meta) == TOP_KEYS
        assert meta["audio_dir"] == "stems" and meta["midi_dir"] == "MIDI"
        assert meta["normalized"] is True and meta["overall_gain"] > 0
        assert len(meta["UUID"]) == 32 and int(meta["UUID"], 16) >= 0
        for stem in meta["stems"].values():
            assert set(stem) == STEM_KEYS
            assert stem["midi_saved"] is True and stem["audio_rendered"] is True
            assert stem["plugin_name"] == "fluidsynth_TimGM6mb"
            assert stem["inst_class"] == family[stem["program_num"]]
            if stem["is_drum"]:
                seen_drums = True
                assert stem["program_num"] == 128 and stem["inst_class"] == "Drums"
                assert stem["midi_program_name"] == "Drums"
            else:
                assert 0 <= stem["program_num"] < 128
                gm_name = instruments.gm_instrument_name(stem["program_num"])
                assert stem["midi_program_name"] == gm_name
    assert seen_drums


def test_each_stem_midi_holds_one_instrument(rendered):
    out, _ = rendered
    for track in _tracks(out):
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        all_src = pretty_midi.PrettyMIDI(str(track / "all_src.mid"))
        assert len(all_src.instruments) == len(meta["stems"])
        for k, (name, stem) in enumerate(sorted(meta["stems"].items())):
            pm = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{name}.mid"))
            assert len(pm.instruments) == 1
            inst = pm.instruments[0]
            assert inst.notes and inst.is_drum == stem["is_drum"]
            if not stem["is_drum"]:
                assert inst.program == stem["program_num"]
            assert [n.pitch for n in inst.notes] == [n.pitch for n in all_src.instruments[k].notes]
            assert max(n.end for n in inst.notes) <= SECONDS + 1e-3


def test_mix_is_sum_of_stems(rendered):
    out, _ = rendered
    for track in _tracks(out):
        mix = _read_int16(track / "mix.flac").astype(np.int64)
        stems = [_read_int16(p).astype(np.int64) for p in sorted((track / "stems").glob("*.flac"))]
        diff = np.abs(mix - np.sum(stems, axis=0)).max()
        assert diff <= 4 * len(stems)  # the bound: 4/32768 per stem in float units
        assert diff == 0  # ours is tighter: the mix is the integer sum of the 16-bit stems
        peak = np.abs(mix).max() / 32768
        assert 0.5 < peak < 1.0  # normalised to -1 dBFS, no clipping
        assert all(np.abs(s).max() > 0 for s in stems)


def test_audio_is_44k1_mono_16bit_and_song_length(rendered):
    out, _ = rendered
    for path in out.glob("*/Track*/**/*.flac"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            44100, 1, "FLAC", "PCM_16")
        assert info.frames == int(SECONDS * 44100)


# --- determinism -------------------------------------------------------------------------------

def test_same_seed_gives_identical_midi_and_samples(rendered, tmp_path):
    out, _ = rendered
    again = tmp_path / "again"
    # The first track again, in a fresh folder, in-process instead of in a worker process.
    _cli(_args(again, splits="train=1"))
    assert [t.name for t in _tracks(again)] == ["Track00001"]
    for track in _tracks(again):
        original = out / track.parent.name / track.name
        for path in track.rglob("*"):
            if path.suffix == ".mid":
                assert path.read_bytes() == (original / path.relative_to(track)).read_bytes()
            elif path.suffix == ".flac":
                np.testing.assert_array_equal(_read_int16(path),
                                              _read_int16(original / path.relative_to(track)))


def test_different_seed_gives_different_songs():
    a = [compose.compose_song(0, n, 4.0) for n in range(1, 4)]
    b = [compose.compose_song(1, n, 4.0) for n in range(1, 4)]
    assert a != b
    midi_a = midi_lib.midi_bytes(midi_lib.song_to_midi(a[0]),
                                 [s.instrument for s in midi_lib.song_to_midi(a[0]).stems])
    midi_b = midi_lib.midi_bytes(midi_lib.song_to_midi(b[0]),
                                 [s.instrument for s in midi_lib.song_to_midi(b[0]).stems])
    assert midi_a != midi_b
    # ... while the same seed and track give the same song, and other tracks other songs.
    assert compose.compose_song(0, 1, 4.0) == a[0]
    assert a[0] != a[1]


# --- composition -------------------------------------------------------------------------------

# Independent limits (sounding pitch), written from standard instrument ranges.
KNOWN_LIMITS = {"Bass": (28, 55), "Violin": (55, 105), "Piccolo": (74, 108), "Flute": (60, 96),
                "Cello": (36, 76), "Timpani": (38, 57), "Piano": (21, 108)}


def test_composition_coverage_and_ranges():
    classes_seen, repeated_class_songs = set(), 0
    for n in range(1, 31):
        song = compose.compose_song(7, n, 10.0)
        assert compose.MIN_STEMS <= len(song.parts) <= compose.MAX_STEMS
        names = [instruments.CLASS_NAMES[instruments.class_of_program(p.program)]
                 for p in song.parts]
        assert "Drums" in names and "Bass" in names
        repeated_class_songs += len(set(names)) < len(names)
        assert {"Piano", "Acoustic Guitar", "Electric Guitar", "Strings"} & set(names)
        classes_seen.update(names)
        for part, name in zip(song.parts, names):
            pitches = [note.pitch for note in part.notes]
            assert pitches, f"song {n}: empty {name} part"
            lo, hi = compose.class_pitch_limits(instruments.class_of_program(part.program))
            assert lo <= min(pitches) and max(pitches) <= hi, (n, name, part.role)
            if name in KNOWN_LIMITS:
                k_lo, k_hi = KNOWN_LIMITS[name]
                assert k_lo <= min(pitches) and max(pitches) <= k_hi, (n, name)
            if part.is_drum:
                assert 35 <= min(pitches) and max(pitches) <= 59  # GM drum keys, inside 24-90
            velocities = [note.velocity for note in part.notes]
            assert 1 <= min(velocities) and max(velocities) <= 127
            for note in part.notes:
                assert 0 <= note.start < note.end <= 10.0
            # No two notes of one pitch overlap (a MIDI note-off would end both).
            by_pitch = {}
            for note in part.notes:
                by_pitch.setdefault(note.pitch, []).append(note)
            for same in by_pitch.values():
                assert all(a.end <= b.start for a, b in zip(same, same[1:]))
    assert len(classes_seen) >= 12
    assert repeated_class_songs > 0  # two stems of one class (the builder sums them)
    assert {"Drums", "Bass", "Piano", "Strings"} <= classes_seen
    assert {"Acoustic Guitar", "Electric Guitar"} & classes_seen


def test_songs_are_musical():
    song = compose.compose_song(3, 5, 12.0)
    assert 70 <= song.tempo <= 160
    scale = set(song.scale)
    for part in song.parts:
        if part.role == "bass":
            # The bass plays the chord root on every chord change.
            for chord in song.chords:
                at_change = [n for n in part.notes if abs(n.start - chord.start) < 1e-3]
                assert at_change and at_change[0].pitch % 12 == chord.pitch_classes[0]
        elif part.role in ("lead", "pad", "chords", "arpeggio") and not part.is_drum:
            assert all(n.pitch % 12 in scale for n in part.notes)  # in key
    strings_song = compose.compose_song(1, 3, 8.0)
    pad = next((p for p in strings_song.parts if p.role == "pad"), None)
    assert pad is not None  # track 3 always has strings, which sustain chords
    for chord in strings_song.chords:
        held = [n for n in pad.notes if abs(n.start - chord.start) < 1e-3]
        assert len(held) >= 3 and all(n.end >= chord.end - 0.05 for n in held)
        assert {n.pitch % 12 for n in held} == set(chord.pitch_classes)


def test_composition_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least"):
        compose.compose_song(0, 1, 0.1)
    with pytest.raises(ValueError, match="start at 1"):
        compose.compose_song(0, 0, 4.0)


def test_max_stems_keeps_drums_bass_and_core_and_only_removes_parts():
    for track in range(1, 13):
        full = compose.compose_song(3, track, 8.0)
        capped = compose.compose_song(3, track, 8.0, max_stems=3)
        assert len(capped.parts) == min(3, len(full.parts))
        # The cap removes parts and changes nothing else: every kept part is one of the song's.
        assert all(part in full.parts for part in capped.parts)
        assert (capped.tempo, capped.key, capped.chords) == (full.tempo, full.key, full.chords)
        classes = {instruments.class_of_program(p.program) for p in capped.parts}
        assert instruments.class_index("Drums") in classes and instruments.class_index("Bass") in classes
        assert len(compose.compose_song(3, track, 8.0, max_stems=compose.MAX_STEMS).parts) == len(full.parts)
    with pytest.raises(ValueError, match="max_stems must be in 3..9"):
        compose.compose_song(0, 1, 4.0, max_stems=2)
    with pytest.raises(SystemExit, match="--max_stems must be in 3..9"):
        synth_slakh.main(["--out", "unused", "--seconds", "4", "--max_stems", "10", "--splits", "train=1"])


# --- --midi_dir --------------------------------------------------------------------------------

def _two_instrument_midi(path: Path) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    piano = pretty_midi.Instrument(program=0, name="piano")
    piano.notes = [pretty_midi.Note(90, p, 0.0, 1.5) for p in (60, 64, 67)]
    bass = pretty_midi.Instrument(program=33, name="bass")
    bass.notes = [pretty_midi.Note(110, 40, 0.5, 1.5)]  # E2, 82.4 Hz, as General MIDI sounds it
    pm.instruments = [piano, bass]
    pm.write(str(path))


def test_midi_dir_renders_one_stem_per_instrument(tmp_path):
    midi_dir = tmp_path / "midis"
    midi_dir.mkdir()
    _two_instrument_midi(midi_dir / "song.mid")
    out = tmp_path / "out"
    printed = _cli(["--out", str(out), "--midi_dir", str(midi_dir), "--seed", "0",
                    "--seconds", "5", "--workers", "1"])
    assert "--seconds is ignored" in printed
    (track,) = _tracks(out)
    assert track.parent.name == "train" and track.name == "Track00001"
    meta = yaml.safe_load((track / "metadata.yaml").read_text())
    assert [s["program_num"] for s in meta["stems"].values()] == [0, 33]
    assert meta["source_midi"].endswith("song.mid")
    # Full length plus 1 s of release.
    assert sf.info(str(track / "mix.flac")).frames == int(np.ceil(2.5 * 44100))
    piano = pretty_midi.PrettyMIDI(str(track / "MIDI" / "S00.mid")).instruments
    bass = pretty_midi.PrettyMIDI(str(track / "MIDI" / "S01.mid")).instruments
    assert len(piano) == 1 and len(bass) == 1
    assert sorted(n.pitch for n in piano[0].notes) == [60, 64, 67]
    # Slakh convention: the bass is written an octave above what sounds, and the builder's
    # -12 shift (BASS_OCTAVE_SHIFT) gives back the sounding pitch.
    (written,) = [n.pitch for n in bass[0].notes]
    assert written == 52
    label = written + instruments.BASS_OCTAVE_SHIFT
    bass_audio = _read_int16(track / "stems" / "S01.flac").astype(np.float64)
    # The stem is aligned with its MIDI: silent before the note at 0.5 s, sounding right after.
    assert np.abs(bass_audio[: int(0.49 * 44100)]).max() == 0
    assert np.abs(bass_audio[int(0.5 * 44100): int(0.55 * 44100)]).max() > 1000
    audio = bass_audio[int(0.6 * 44100): int(0.6 * 44100) + 32768]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size), 4 * audio.size))
    freqs = np.fft.rfftfreq(4 * audio.size, 1 / 44100)
    band = (freqs > 40) & (freqs < 400)
    spectrum, freqs = spectrum[band], freqs[band]
    # The fundamental: the lowest spectral peak at least 30 % as strong as the strongest one
    # (TimGM6mb's bass has a 2nd harmonic about as strong as its fundamental).
    peaks = (spectrum >= np.roll(spectrum, 1)) & (spectrum >= np.roll(spectrum, -1))
    strong = np.flatnonzero(peaks & (spectrum >= 0.3 * spectrum.max()))
    f0 = freqs[strong[0]]
    assert f0 == pytest.approx(440 * 2 ** ((label - 69) / 12), rel=0.03)


def test_midi_dir_split_assignment_is_deterministic():
    files = [Path(f"song{i:02d}.mid") for i in range(10)]
    counts = plan.split_counts(plan.parse_splits(plan.DEFAULT_SPLITS), len(files))
    jobs = plan.midi_jobs(files, counts, seed=3)
    assert [j.midi_path for j in jobs] == [j.midi_path for j in plan.midi_jobs(files, counts, 3)]
    assert [j.midi_path for j in jobs] != [j.midi_path for j in plan.midi_jobs(files, counts, 4)]
    assert sorted(j.midi_path for j in jobs) == sorted(str(f) for f in files)
    assert [j.split for j in jobs] == ["train"] * 7 + ["validation"] * 2 + ["test"]
    with pytest.raises(SynthError, match="only 10 MIDI files"):
        plan.midi_jobs(files, {"train": 11, "validation": 0, "test": 0}, 0)


# --- errors ------------------------------------------------------------------------------------

def _error(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        synth_slakh.main(argv)
    return str(info.value)


def test_missing_soundfont_path_is_a_clear_error(tmp_path):
    message = _error(_args(tmp_path / "o") + ["--soundfont", str(tmp_path / "nope.sf2")])
    assert "--soundfont" in message and "nope.sf2" in message and "does not exist" in message


def test_no_soundfont_at_all_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fluidsynth, "SYSTEM_SOUNDFONT", Path("/nonexistent/TimGM6mb.sf2"))
    monkeypatch.setattr(fluidsynth, "bundled_soundfont", lambda: None)
    with pytest.raises(SynthError, match="make system-deps") as info:
        fluidsynth.resolve_soundfont(None)
    assert "/nonexistent/TimGM6mb.sf2" in str(info.value)
    # Without the system file, pretty_midi's bundled copy is the fallback.
    monkeypatch.undo()
    monkeypatch.setattr(fluidsynth, "SYSTEM_SOUNDFONT", Path("/nonexistent/TimGM6mb.sf2"))
    assert fluidsynth.resolve_soundfont(None).parent.name == "pretty_midi"


def test_missing_fluidsynth_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    message = _error(_args(tmp_path / "o"))
    assert "fluidsynth" in message and "apt-get install fluidsynth" in message


def test_empty_midi_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _error(["--out", str(tmp_path / "o"), "--midi_dir", str(tmp_path / "empty")])
    assert "no MIDI files" in message and "empty" in message


def test_non_midi_file_in_midi_dir_is_named(tmp_path):
    midi_dir = tmp_path / "midis"
    midi_dir.mkdir()
    _two_instrument_midi(midi_dir / "good.mid")
    (midi_dir / "notes.txt").write_text("not music")
    message = _error(["--out", str(tmp_path / "o"), "--midi_dir", str(midi_dir)])
    assert "notes.txt" in message and "not a MIDI file" in message


def test_corrupt_midi_file_is_named(tmp_path):
    midi_dir = tmp_path / "midis"
    midi_dir.mkdir()
    (midi_dir / "broken.mid").write_bytes(b"this is not a standard MIDI file")
    message = _error(["--out", str(tmp_path / "o"), "--midi_dir", str(midi_dir), "--workers", "1"])
    assert "broken.mid" in message and "could not be read as a MIDI file" in message
    assert not list((tmp_path / "o").glob("*/Track*"))
    assert not list((tmp_path / "o").glob(".partial/*/Track*"))  # the failed track is cleaned up


def test_bad_arguments(tmp_path):
    assert "--seconds is required" in _error(["--out", str(tmp_path / "o"), "--tracks", "2"])
    assert "add up to 3" in _error(_args(tmp_path / "o2") + ["--tracks", "5"])
    assert "--workers" in _error(_args(tmp_path / "o3") + ["--workers", "0"])
    assert "no tracks" in _error(["--out", str(tmp_path / "o4"), "--seconds", "2",
                                  "--splits", "train=0"])
    assert "at least 0.5" in _error(_args(tmp_path / "o5") + ["--seconds", "0.1"])
    assert "--tracks must be at least 1" in _error(["--out", str(tmp_path / "o6"), "--tracks",
                                                    "0", "--seconds", "2"])
    assert not any((tmp_path / name).exists() for name in ("o", "o2", "o3", "o4", "o5", "o6"))


@pytest.mark.parametrize("flag, argv", [
    ("--out", ["--out", "gs://no-such-bucket/x", "--seconds", "2", "--tracks", "1", "--splits", "train=1"]),
    ("--midi_dir", ["--out", "rendered", "--midi_dir", "gs://no-such-bucket/midis"]),
])
def test_a_bucket_path_is_refused_before_anything_is_written(flag, argv, tmp_path, monkeypatch, capsys):
    """``gs://b/x`` as a local path would be a folder ``./gs:/b/x``: it is refused, naming the flag."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        synth_slakh.main(argv)
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: 'gs://no-such-bucket/" in error and "is a bucket path" in error
    assert "data_pipelines.build_slakh --slakh_dir LOCAL_FOLDER --data_dir gs://BUCKET/tfds" in error
    assert list(tmp_path.iterdir()) == []


# --- splits ------------------------------------------------------------------------------------

def test_split_parsing_and_counts():
    fractions = plan.parse_splits("train=0.7,validation=0.15,test=0.15")
    assert plan.split_counts(fractions, 10) == {"train": 7, "validation": 2, "test": 1}
    assert sum(plan.split_counts(fractions, 2101).values()) == 2101
    assert plan.split_counts(plan.parse_splits("train=16,validation=4,test=4"), None) == {
        "train": 16, "validation": 4, "test": 4}
    assert plan.split_counts(plan.parse_splits("train=3"), 3) == {"train": 3, "validation": 0,
                                                                   "test": 0}
    assert plan.number_tracks({"train": 2, "validation": 1, "test": 1}) == [
        (1, "train"), (2, "train"), (3, "validation"), (4, "test")]
    for bad, match in [("train=0.5,test=0.2", "sum to 0.7"), ("training=1", "NAME in"),
                       ("train=-1", "negative"), ("train=a", "integer counts or fractions"),
                       ("train=1,train=2", "twice")]:
        with pytest.raises(SynthError, match=match):
            plan.parse_splits(bad)


# --- interruption and resume -------------------------------------------------------------------

def test_resume_replaces_a_half_written_track(rendered, tmp_path):
    out, _ = rendered
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    victim = copy / "validation" / "Track00002"
    shutil.rmtree(victim)
    # What an interrupted run leaves: a half-written temporary folder.
    leftover = layout.partial_dir(victim)
    (leftover / "stems").mkdir(parents=True)
    (leftover / "stems" / "S00.flac").write_bytes(b"truncated")
    summary = dataset.synthesize(
        dataset.Options(out=copy, tracks=3, seconds=SECONDS, seed=0, splits=SPLITS, workers=1),
        log=lambda line: None)
    assert (summary.rendered, summary.skipped) == (1, 2)
    assert summary.total_seconds == pytest.approx(3 * SECONDS)
    assert not leftover.exists()
    for path in (out / "validation" / "Track00002").rglob("*.mid"):
        assert (victim / path.relative_to(out / "validation" / "Track00002")).read_bytes() == \
            path.read_bytes()
    np.testing.assert_array_equal(_read_int16(victim / "mix.flac"),
                                  _read_int16(out / "validation" / "Track00002" / "mix.flac"))


def test_resume_with_other_arguments_is_refused(rendered, tmp_path):
    out, _ = rendered
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    message = _error(_args(copy, seed=5))
    assert "other arguments" in message and "seed: 0 -> 5" in message


# --- gain --------------------------------------------------------------------------------------

def test_gain_keeps_mix_and_every_stem_below_full_scale():
    # Two stems that cancel: the mix is silent-ish, the stems are loud.
    t = np.arange(1000) / 44100
    a = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    stems = np.stack([a, -a + 0.01 * a])
    gain = layout.track_gain(stems)
    q, mix = layout.quantise_track(stems, gain)
    assert np.abs(q).max() < 32767 and np.abs(mix).max() < 32767
    np.testing.assert_array_equal(mix, q.astype(np.int64).sum(axis=0))
    assert layout.track_gain(np.zeros((2, 10), np.float32)) == 1.0
