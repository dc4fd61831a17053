"""Tests of the Slakh2100 -> TFDS builder (data_pipelines/slakh2100, data_pipelines/build_slakh).

Every test builds tiny hand-made Slakh track folders (sine-wave stems at 44.1 kHz and
single-instrument MIDI files) and, where needed, a dataset with a 5-s hop so tracks have
several windows.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pretty_midi
import pytest
import scipy.signal
import soundfile
import yaml

from data_pipelines import build_slakh
from data_pipelines.slakh2100 import slakh_tracks
from jointist_jax.data import packing
from jointist_jax.data.packing import assemble_track
from jointist_jax import instruments

SLAKH_RATE = 44100
RATE = 16000
HOP_SECONDS = 5.0
CLIP = 160000

PIANO, BASS, GUITAR, DRUMS, STRINGS = (instruments.class_index(n)
                                       for n in ("Piano", "Bass", "Electric Guitar", "Drums",
                                                 "Strings"))


# ----------------------------------------------------------------------------- fixtures


def write_track(root, split, track_id, seconds, stems, write_mix=True):
    """Writes one Slakh track folder.

    ``stems``: dicts with ``program_num``, ``plugin_name``, ``freq`` (sine Hz), ``notes``
    [(pitch, velocity, start, end)], optional ``midi_program`` (the MIDI file's own program),
    ``midi_saved``/``audio_rendered`` (default true), ``write_audio``/``write_midi`` (default
    as the flags), ``instruments`` (number of MIDI instruments, default 1), ``audio_seconds``.
    """
    track_dir = os.path.join(root, split, track_id)
    os.makedirs(os.path.join(track_dir, "stems"))
    os.makedirs(os.path.join(track_dir, "MIDI"))
    meta = {"UUID": track_id, "stems": {}}
    mix = np.zeros(int(seconds * SLAKH_RATE), np.float64)
    for i, stem in enumerate(stems):
        stem_id = f"S{i:02d}"
        midi_saved = stem.get("midi_saved", True)
        audio_rendered = stem.get("audio_rendered", True)
        meta["stems"][stem_id] = {
            "program_num": stem["program_num"], "plugin_name": stem["plugin_name"] + ".nkm",
            "is_drum": stem["program_num"] == 128, "inst_class": "x", "midi_program_name": "x",
            "midi_saved": midi_saved, "audio_rendered": audio_rendered,
        }
        n = int(stem.get("audio_seconds", seconds) * SLAKH_RATE)
        t = np.arange(n) / SLAKH_RATE
        audio = stem.get("amplitude", 0.2) * np.sin(2 * np.pi * stem["freq"] * t)
        if audio_rendered:
            mix[:min(n, mix.size)] += audio[:mix.size]
        if stem.get("write_audio", audio_rendered):
            soundfile.write(os.path.join(track_dir, "stems", f"{stem_id}.flac"), audio,
                            SLAKH_RATE)
        if stem.get("write_midi", midi_saved):
            midi = pretty_midi.PrettyMIDI()
            for _ in range(stem.get("instruments", 1)):
                inst = pretty_midi.Instrument(program=stem.get("midi_program",
                                                               stem["program_num"] % 128),
                                              is_drum=stem["program_num"] == 128)
                for pitch, velocity, start, end in stem["notes"]:
                    inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch,
                                                       start=start, end=end))
                midi.instruments.append(inst)
            midi.write(os.path.join(track_dir, "MIDI", f"{stem_id}.mid"))
    if write_mix:
        soundfile.write(os.path.join(track_dir, "mix.flac"), mix, SLAKH_RATE)
    with open(os.path.join(track_dir, "metadata.yaml"), "w") as f:
        yaml.safe_dump(meta, f)
    # all_src.mid must never be read: make it unreadable garbage.
    with open(os.path.join(track_dir, "all_src.mid"), "wb") as f:
        f.write(b"not a midi file")
    return track_dir


TRACK1_STEMS = [
    # Piano (program 0): one note spans all windows, one is >= 109 and dropped, one starts
    # after the audio ends and is dropped.
    {"program_num": 0, "plugin_name": "grand_piano", "freq": 220.0,
     "notes": [(60, 80, 0.5, 19.0), (110, 90, 1.0, 2.0), (64, 70, 7.25, 8.0),
               (62, 50, 25.0, 26.0)]},
    # Bass: the MIDI file's program 33 shifts -12.
    {"program_num": 33, "plugin_name": "scarbee_bass", "freq": 55.0,
     "notes": [(40, 100, 2.0, 3.0), (45, 100, 12.5, 13.5)]},
    # Drum plugin: only 24..90 kept, unshifted.
    {"program_num": 128, "plugin_name": "funk_kit", "freq": 1000.0,
     "notes": [(36, 120, 0.0, 0.1), (20, 120, 1.0, 1.1), (95, 120, 2.0, 2.1),
               (38, 110, 15.0, 15.1)]},
    # A second piano stem (program 1, same class): summed with the first.
    {"program_num": 1, "plugin_name": "upright_piano", "freq": 330.0, "amplitude": 0.15,
     "notes": [(60, 60, 0.5, 1.0)]},
    # midi_saved false: neither notes nor a class stem.
    {"program_num": 40, "plugin_name": "violin", "freq": 440.0, "midi_saved": False,
     "notes": [(70, 80, 3.0, 4.0)]},
]
TRACK2_STEMS = [
    {"program_num": 27, "plugin_name": "elektrik_guitar", "freq": 440.0,
     "notes": [(52, 90, 1.0, 2.0), (55, 90, 9.999, 11.0)]},
    # midi_saved but not rendered: notes, no class stem.
    {"program_num": 48, "plugin_name": "strings_ensemble", "freq": 660.0,
     "audio_rendered": False, "notes": [(67, 70, 4.0, 6.0)]},
]
TRACK3_STEMS = [
    {"program_num": 4, "plugin_name": "e_piano", "freq": 500.0, "notes": [(72, 64, 0.0, 11.0)]},
]


@pytest.fixture(scope="module")
def slakh_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("slakh"))
    write_track(root, "train", "Track00001", 20.0, TRACK1_STEMS)
    write_track(root, "train", "Track00002", 13.0, TRACK2_STEMS)
    write_track(root, "validation", "Track00003", 12.0, TRACK3_STEMS)
    os.makedirs(os.path.join(root, "omitted", "Track09999"))  # redux layout: ignored
    return root


@pytest.fixture(scope="module")
def built(slakh_dir, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    summary = build_slakh.build(slakh_dir, data_dir, hop_seconds=HOP_SECONDS, workers=1)
    return summary, data_dir


def read_split(dataset_dir, split):
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(dataset_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return builder, list(tfds.as_numpy(ds))


def expected_stem(track_dir, stem_ids):
    total = None
    for stem_id in stem_ids:
        x, rate = soundfile.read(os.path.join(track_dir, "stems", f"{stem_id}.flac"),
                                 dtype="float32")
        y = scipy.signal.resample_poly(x, 160, 441).astype(np.float32)
        total = y if total is None else total + y
    return slakh_tracks.to_int16(total)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("n,hop", [(160000, 80000), (160001, 80000), (320000, 80000),
                                   (656000, 480000), (999_999, 480000), (250_000, 7)])
def test_every_crop_start_lies_in_exactly_one_window(n, hop):
    bounds = packing.window_bounds(n, CLIP, hop)
    assert len(bounds) == packing.num_windows(n, CLIP, hop) == math.ceil((n - CLIP + 1) / hop)
    starts = np.arange(0, n - CLIP + 1)
    k = starts // hop
    assert k.max() == len(bounds) - 1
    lo = np.array([b[0] for b in bounds])[k]
    hi = np.array([b[1] for b in bounds])[k]
    assert np.all(lo <= starts) and np.all(starts + CLIP <= hi)
    assert [packing.window_of_crop(int(s), hop) for s in (0, n - CLIP)] == [0, len(bounds) - 1]
    for i, (a, b) in enumerate(bounds):
        assert a == i * hop and b == min(a + hop + CLIP - 1, n)
    # Consecutive windows cover the track without gaps (prefix of H samples each).
    assert all(bounds[i][1] - bounds[i][0] >= hop for i in range(len(bounds) - 1))
    assert bounds[-1][1] == n


def test_short_track_has_no_window_and_bad_hops_are_rejected():
    assert packing.num_windows(CLIP - 1, CLIP, 80000) == 0
    with pytest.raises(ValueError, match="whole numbers of samples"):
        packing.check_hop(0.00001, 10, RATE)
    with pytest.raises(ValueError, match="multiple of 2"):
        packing.check_hop(0.1, 10, RATE)
    with pytest.raises(ValueError, match="must be <"):
        packing.check_hop(600, 10, RATE)
    assert packing.check_hop(30, 10, RATE) == (480000, 160000)


def test_window_notes_keeps_overlapping_notes_relative_to_window():
    notes = {"note_class": np.array([0, 1, 2, 3]), "note_pitch": np.array([60, 61, 62, 63]),
             "note_velocity": np.array([1, 2, 3, 4]),
             "note_onset": packing.quantize_times(np.array([0.0, 4.0, 5.5, 20.0])),
             "note_offset": packing.quantize_times(np.array([4.999, 30.0, 6.0, 21.0]))}
    out = packing.window_notes(notes, 80000, 80000 + 239999, RATE)  # [5 s, 19.99 s)
    assert out["note_pitch"].tolist() == [61, 62]
    np.testing.assert_array_equal(out["note_onset"], np.float32([-1.0, 0.5]))
    assert out["note_onset"].dtype == np.float32 and out["note_class"].dtype == np.int32


# ----------------------------------------------------------------------------- track reading


def test_load_track_labels(slakh_dir):
    track = slakh_tracks.load_track(os.path.join(slakh_dir, "train", "Track00001"))
    assert track.stem_classes.tolist() == sorted([PIANO, BASS, DRUMS])
    rows = sorted(zip(track.notes["note_class"].tolist(), track.notes["note_pitch"].tolist()))
    assert rows == sorted([(PIANO, 60), (PIANO, 64), (BASS, 28), (BASS, 33), (DRUMS, 36),
                           (DRUMS, 38), (PIANO, 60)])
    assert track.track_classes.tolist() == sorted([PIANO, BASS, DRUMS])
    # drum at 0 s; the two piano notes at 0.5 s are ordered by offset (1 s before 19 s).
    assert track.notes["note_velocity"].tolist()[:3] == [120, 60, 80]
    onsets = track.notes["note_onset"]
    assert np.all(np.diff(onsets) >= 0)


def test_instrument_that_plays_nothing_is_neither_label_nor_stem(tmp_path):
    """A violin stem whose MIDI track has no note and whose audio is silence: not a class of the
    track and no class stem. A note-less stem of a class that has notes elsewhere is still summed
    into that class's stem, as the reference does."""
    stems = [TRACK3_STEMS[0],
             {"program_num": 40, "plugin_name": "violin", "freq": 440.0, "amplitude": 0.0, "notes": []},
             {"program_num": 5, "plugin_name": "e_piano_2", "freq": 250.0, "amplitude": 0.1, "notes": []}]
    root = _one_track(tmp_path, stems)
    track_dir = os.path.join(root, "train", "Track00001")
    track = slakh_tracks.load_track(track_dir)
    e_piano = instruments.class_index("Electric Piano")
    assert track.track_classes.tolist() == [e_piano]
    assert track.stem_classes.tolist() == [e_piano]
    np.testing.assert_array_equal(track.stems[0], expected_stem(track_dir, ["S00", "S02"]))


def test_drum_plugin_with_other_program_is_drums_and_filtered():
    stem = slakh_tracks.StemInfo("S00", program_num=0, plugin_name="pop_kit",
                                 midi_saved=True, audio_rendered=True)
    assert stem.is_drum and stem.class_index == DRUMS
    stem = slakh_tracks.StemInfo("S00", program_num=0, plugin_name="grand_piano",
                                 midi_saved=True, audio_rendered=True)
    assert not stem.is_drum and stem.class_index == PIANO


def test_int16_packing_clips_instead_of_overflowing():
    x = np.array([1.5, -1.5, 0.5, 1.0, -1.0001], np.float32)
    np.testing.assert_array_equal(slakh_tracks.to_int16(x),
                                  np.int16([32767, -32768, 16384, 32767, -32768]))


def test_track_skipped_pickles():
    e = pickle.loads(pickle.dumps(slakh_tracks.TrackSkipped("Track1", "why")))
    assert (e.track_id, e.reason, str(e)) == ("Track1", "why", "Track1: why")


def test_worker_pool_keeps_order_and_returns_skips(slakh_dir, tmp_path):
    import functools
    from data_pipelines.slakh2100.ordered_pool import ordered_map
    write_track(str(tmp_path), "train", "Track00005", 9.0, TRACK3_STEMS)  # too short
    dirs = [os.path.join(slakh_dir, "train", "Track00001"),
            os.path.join(str(tmp_path), "train", "Track00005"),
            os.path.join(slakh_dir, "train", "Track00002"),
            os.path.join(slakh_dir, "validation", "Track00003")]
    loader = functools.partial(slakh_tracks.load_track_or_skip, sample_rate=RATE,
                               clip_samples=CLIP)
    pooled = list(ordered_map(loader, dirs, workers=2, max_in_flight=2))
    serial = list(ordered_map(loader, dirs, workers=1))
    assert isinstance(pooled[1], slakh_tracks.TrackSkipped) and "shorter" in pooled[1].reason
    for a, b in zip(pooled[::2] + pooled[3:], serial[::2] + serial[3:]):
        assert a.track_id == b.track_id
        np.testing.assert_array_equal(a.stems, b.stems)
        np.testing.assert_array_equal(a.notes["note_onset"], b.notes["note_onset"])
    # A worker's error stops the iteration with that error.
    os.remove(os.path.join(str(tmp_path), "train", "Track00005", "metadata.yaml"))
    with pytest.raises(slakh_tracks.SlakhFormatError, match="metadata.yaml"):
        list(ordered_map(loader, dirs, workers=2))


def test_track_loading_modules_do_not_import_tensorflow():
    """Spawned workers import these (and the CLI module as __mp_main__): no TensorFlow."""
    import subprocess
    import sys
    code = ("import sys, data_pipelines.build_slakh, data_pipelines.slakh2100.slakh_tracks, "
            "data_pipelines.slakh2100.ordered_pool; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# ----------------------------------------------------------------------------- round trip


def test_schema(built):
    summary, _ = built
    import tensorflow_datasets as tfds
    builder = tfds.builder_from_directory(summary.dataset_dir)
    feats = builder.info.features
    assert builder.info.disable_shuffling
    from data_pipelines.slakh2100 import Slakh2100
    assert Slakh2100.name == "slakh2100" and builder.info.name == "slakh2100"
    expected = {"track_id": np.object_, "window_index": np.int32, "window_start": np.int64,
                "track_length": np.int64, "mix": np.int16, "stem_classes": np.int32,
                "stems": np.int16, "note_class": np.int32, "note_pitch": np.int32,
                "note_velocity": np.int32, "note_onset": np.float32,
                "note_offset": np.float32, "track_classes": np.int32}
    assert set(feats.keys()) == set(expected)
    for name, dtype in expected.items():
        assert feats[name].dtype == dtype, name
    assert feats["stems"].shape == (None, None) and feats["mix"].shape == (None,)
    for name in ("mix", "stems"):
        assert feats[name]._encoding in (tfds.features.Encoding.ZLIB,
                                         tfds.features.Encoding.BYTES)
    assert isinstance(feats["track_id"], tfds.features.Text)
    meta = builder.info.metadata
    assert (meta["hop_seconds"], meta["clip_seconds"], meta["sample_rate"]) == (5.0, 10.0, 16000)
    assert meta["train"]["tracks_written"] == 2 and meta["train"]["skipped"] == []


def test_round_trip_audio_notes_and_order(built, slakh_dir):
    summary, _ = built
    assert set(summary.splits) == {"train", "validation"}
    _, train = read_split(summary.dataset_dir, "train")
    # Generation order: tracks sorted, windows consecutive.
    order = [(ex["track_id"].decode(), int(ex["window_index"])) for ex in train]
    assert order == [("Track00001", 0), ("Track00001", 1), ("Track00001", 2),
                     ("Track00002", 0)]
    hop = int(HOP_SECONDS * RATE)
    for ex in train:
        n, start = int(ex["track_length"]), int(ex["window_start"])
        assert start == int(ex["window_index"]) * hop
        assert ex["mix"].shape == (min(start + hop + CLIP - 1, n) - start,)
        assert ex["stems"].shape == (len(ex["stem_classes"]), ex["mix"].shape[0])

    track1 = assemble_track(train[:3])
    track_dir = os.path.join(slakh_dir, "train", "Track00001")
    assert track1["track_length"] == 320000 and track1["mix"].shape == (320000,)
    assert track1["stem_classes"].tolist() == [PIANO, BASS, DRUMS]
    # Stems of one class are summed (S00 + S03 are both Piano); S04 (midi_saved false) absent.
    np.testing.assert_array_equal(track1["stems"][0], expected_stem(track_dir, ["S00", "S03"]))
    np.testing.assert_array_equal(track1["stems"][1], expected_stem(track_dir, ["S01"]))
    np.testing.assert_array_equal(track1["stems"][2], expected_stem(track_dir, ["S02"]))
    mix, _ = soundfile.read(os.path.join(track_dir, "mix.flac"), dtype="float32")
    np.testing.assert_array_equal(
        track1["mix"], slakh_tracks.to_int16(scipy.signal.resample_poly(mix, 160, 441)))

    # Assembled notes equal the track-level labels exactly.
    direct = slakh_tracks.load_track(track_dir)
    for name in packing.NOTE_FIELDS:
        np.testing.assert_array_equal(track1[name], direct.notes[name], err_msg=name)
    labels = list(zip(track1["note_class"].tolist(), track1["note_pitch"].tolist(),
                      track1["note_onset"].tolist()))
    assert labels == [(DRUMS, 36, 0.0), (PIANO, 60, 0.5), (PIANO, 60, 0.5), (BASS, 28, 2.0),
                      (PIANO, 64, 7.25), (BASS, 33, 12.5), (DRUMS, 38, 15.0)]
    assert track1["track_classes"].tolist() == [PIANO, BASS, DRUMS]

    # The long piano note (0.5-19 s) is in every window, with negative onset after window 0.
    for ex in train[:3]:
        long = (ex["note_pitch"] == 60) & np.isclose(ex["note_offset"] + ex["window_start"]
                                                     / RATE, 19.0)
        assert long.sum() == 1
        assert math.isclose(float(ex["note_onset"][long][0]),
                            0.5 - int(ex["window_start"]) / RATE)
    # Window 2 [10 s, 20 s) holds only notes that overlap it, sorted by (onset, class, pitch).
    w2 = train[2]
    assert w2["note_pitch"].tolist() == [60, 33, 38]
    assert np.all(np.diff(w2["note_onset"]) >= 0)

    # Track 2: stem not rendered -> class has notes but no stem.
    track2 = assemble_track(train[3:])
    assert track2["stem_classes"].tolist() == [GUITAR]
    assert track2["track_classes"].tolist() == sorted([GUITAR, STRINGS])


def test_summary_counts_and_storage(built):
    summary, _ = built
    train = summary.splits["train"]
    assert (train.tracks_written, train.windows, train.tracks_skipped) == (2, 4, 0)
    assert summary.splits["validation"].windows == 1
    assert math.isclose(summary.audio_seconds, 20 + 13 + 12)
    assert summary.throughput > 0 and summary.num_bytes > 0
    assert train.num_shards == 4  # 256 by default, clamped to the window count
    text = summary.format()
    assert "train" in text and "audio-seconds per second" in text


def test_storage_at_default_hop_is_at_most_1p5x_int16(tmp_path):
    slakh = str(tmp_path / "slakh")
    rng = np.random.default_rng(0)
    stems = [{"program_num": 0, "plugin_name": "piano", "freq": 100.0 + 50 * i,
              "notes": [(60 + i, 80, 1.0, 2.0)]} for i in range(2)]
    track_dir = write_track(slakh, "test", "Track00010", 41.0, stems)
    # Noise is incompressible: the bound must hold without zlib's help.
    for name in ("mix.flac", "stems/S00.flac", "stems/S01.flac"):
        soundfile.write(os.path.join(track_dir, name),
                        rng.uniform(-0.4, 0.4, int(41 * SLAKH_RATE)), SLAKH_RATE)
    summary = build_slakh.build(slakh, str(tmp_path / "out"))
    n = 41 * RATE
    int16_bytes = 2 * n * (1 + 1)  # mix + one Piano class stem
    assert summary.splits["test"].windows == 2
    assert summary.num_bytes <= 1.5 * int16_bytes, summary.num_bytes / int16_bytes


def test_generation_order_survives_tfds_disk_buckets(slakh_dir, tmp_path, monkeypatch):
    """Splits over 1 GB are sorted through 1000 on-disk buckets: keys must keep the order."""
    from tensorflow_datasets.core import shuffle
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 0)
    summary = build_slakh.build(slakh_dir, str(tmp_path), splits=["train"],
                                hop_seconds=HOP_SECONDS, num_shards=2)
    assert summary.splits["train"].num_shards == 2  # order must also hold across shards
    _, train = read_split(summary.dataset_dir, "train")
    assert [(ex["track_id"].decode(), int(ex["window_index"])) for ex in train] == [
        ("Track00001", 0), ("Track00001", 1), ("Track00001", 2), ("Track00002", 0)]


def test_example_keys_sort_in_order_and_spread_over_tfds_buckets():
    from tensorflow_datasets.core import shuffle
    from data_pipelines.slakh2100.slakh2100_dataset_builder import example_key
    num_tracks = 1500
    keys = [example_key(p, num_tracks, k) for p in range(num_tracks) for k in range(12)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) and max(keys) < 2 ** 128
    buckets = {shuffle.get_bucket_number(key, shuffle.BUCKETS_NUMBER) for key in keys}
    assert len(buckets) >= 0.9 * shuffle.BUCKETS_NUMBER


def test_assemble_track_rejects_incomplete_windows(built):
    summary, _ = built
    _, train = read_split(summary.dataset_dir, "train")
    with pytest.raises(ValueError, match="window indices"):
        assemble_track([train[0], train[2]])
    with pytest.raises(ValueError, match="several tracks"):
        assemble_track(train[2:4])


# ----------------------------------------------------------------------------- re-runs


def test_rerun_reports_already_built_and_overwrite_rebuilds(built, slakh_dir):
    summary, data_dir = built
    again = build_slakh.build(slakh_dir, data_dir, hop_seconds=HOP_SECONDS)
    assert again.already_built and again.windows == summary.windows
    assert again.splits["train"].tracks_written == 2  # read back from the dataset metadata
    assert "already built" in again.format()


def test_interrupted_build_is_cleaned_up_and_completes(slakh_dir, tmp_path):
    first = build_slakh.build(slakh_dir, str(tmp_path), splits=["validation"],
                              hop_seconds=HOP_SECONDS)
    dataset_dir = first.dataset_dir
    # Simulate a build killed mid-way: remove the result, leave TFDS's temp dir behind.
    import shutil
    parent = os.path.dirname(dataset_dir)
    leftover = os.path.join(parent, "incomplete.ABC123_1.0.0")
    shutil.copytree(dataset_dir, leftover)
    shutil.rmtree(dataset_dir)
    summary = build_slakh.build(slakh_dir, str(tmp_path), splits=["validation"],
                                hop_seconds=HOP_SECONDS)
    assert not summary.already_built and summary.windows == 1
    assert not os.path.exists(leftover)
    again = build_slakh.build(slakh_dir, str(tmp_path), splits=["validation"],
                              hop_seconds=HOP_SECONDS, overwrite=True)
    assert not again.already_built and again.windows == 1


def test_cli_main(slakh_dir, tmp_path, capsys):
    assert build_slakh.main(["--slakh_dir", slakh_dir, "--data_dir", str(tmp_path),
                             "--splits", "validation", "--hop_seconds", "5",
                             "--workers", "1", "--num_shards", "3"]) == 0
    out = capsys.readouterr().out
    assert "validation" in out and "audio-seconds per second" in out
    assert build_slakh.main(["--slakh_dir", str(tmp_path / "nope"), "--data_dir",
                             str(tmp_path)]) == 2
    assert "no Slakh2100 split folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


def _one_track(tmp_path, stems=None, seconds=11.0, **kwargs):
    root = str(tmp_path / "slakh")
    write_track(root, "train", "Track00001", seconds, stems or TRACK3_STEMS, **kwargs)
    return root


def _build(root, tmp_path):
    return build_slakh.build(root, str(tmp_path / "out"), hop_seconds=HOP_SECONDS)


def _skipped_reason(root, tmp_path, good_track=True):
    if good_track:  # a split needs at least one example
        write_track(root, "train", "Track00002", 11.0, TRACK3_STEMS)
    summary = _build(root, tmp_path)
    skipped = summary.splits["train"].skipped
    assert summary.splits["train"].tracks_written == 1 and len(skipped) == 1
    assert skipped[0][0] == "Track00001"
    return skipped[0][1]


def test_missing_stem_audio_skips_track(tmp_path):
    stems = [dict(TRACK3_STEMS[0], write_audio=False)]
    reason = _skipped_reason(_one_track(tmp_path, stems), tmp_path)
    assert "stem S00" in reason and "S00.flac" in reason


def test_unreadable_stem_audio_skips_track(tmp_path):
    root = _one_track(tmp_path)
    with open(os.path.join(root, "train", "Track00001", "stems", "S00.flac"), "wb") as f:
        f.write(b"garbage")
    assert "unreadable" in _skipped_reason(root, tmp_path)


def test_missing_midi_skips_track(tmp_path):
    stems = [dict(TRACK3_STEMS[0], write_midi=False)]
    reason = _skipped_reason(_one_track(tmp_path, stems), tmp_path)
    assert "S00.mid" in reason and "midi_saved" in reason


def test_missing_mix_skips_track(tmp_path):
    assert "mix" in _skipped_reason(_one_track(tmp_path, write_mix=False), tmp_path)


def test_track_without_notes_is_skipped(tmp_path):
    stems = [dict(TRACK3_STEMS[0], notes=[(120, 80, 1.0, 2.0)])]  # pitch >= 109 only
    assert "no notes" in _skipped_reason(_one_track(tmp_path, stems), tmp_path)


def test_short_audio_is_skipped(tmp_path):
    assert "shorter than one" in _skipped_reason(_one_track(tmp_path, seconds=9.5), tmp_path)


def test_stem_length_far_from_mix_is_skipped(tmp_path):
    stems = [dict(TRACK3_STEMS[0], audio_seconds=5.0)]
    assert "the mix has" in _skipped_reason(_one_track(tmp_path, stems), tmp_path)


def test_note_starting_exactly_at_the_end_of_the_audio_is_kept(tmp_path):
    """The reference keeps every MIDI note of the track; one starting exactly at the end of the
    11-s audio lands on the last spectrogram frame. A note starting later is dropped."""
    stems = [dict(TRACK3_STEMS[0], notes=[(72, 64, 0.0, 5.0), (74, 64, 11.0, 11.5), (76, 64, 11.05, 11.5)])]
    root = _one_track(tmp_path, stems, seconds=11.0)
    track = slakh_tracks.load_track(os.path.join(root, "train", "Track00001"))
    assert track.num_samples == 11 * RATE
    assert track.notes["note_pitch"].tolist() == [72, 74]
    assert track.notes["note_onset"].tolist() == [0.0, 11.0]
    # It is stored in the track's last (here only) window and reassembles with the track.
    summary = build_slakh.build(root, str(tmp_path / "out"), hop_seconds=HOP_SECONDS, workers=1)
    _, examples = read_split(summary.dataset_dir, "train")
    assembled = assemble_track(examples)
    assert assembled["note_pitch"].tolist() == [72, 74] and assembled["note_onset"].tolist() == [0.0, 11.0]


def test_window_notes_of_the_last_window_include_a_note_at_its_end():
    notes = {"note_class": np.array([0, 0]), "note_pitch": np.array([60, 62]), "note_velocity": np.array([1, 1]),
             "note_onset": np.array([1.0, 11.0]), "note_offset": np.array([2.0, 11.5])}
    assert packing.window_notes(notes, 0, 11 * RATE, RATE)["note_pitch"].tolist() == [60, 62]


def test_split_whose_tracks_are_all_skipped_is_an_error(tmp_path):
    from data_pipelines.slakh2100.slakh2100_dataset_builder import EmptySplitError
    root = _one_track(tmp_path, seconds=9.0)
    with pytest.raises(EmptySplitError, match=r"'train'.*Track00001: audio is 9.00 s long"):
        _build(root, tmp_path)


def test_multi_instrument_midi_stops_the_build(tmp_path):
    stems = [dict(TRACK3_STEMS[0], instruments=2)]
    root = _one_track(tmp_path, stems)
    with pytest.raises(slakh_tracks.SlakhFormatError, match=r"Track00001.*S00\.mid.*2 instr"):
        _build(root, tmp_path)


@pytest.mark.parametrize("content,match", [
    (None, "cannot read"),
    ("stems: [unclosed", "not valid YAML"),
    ("stems: 3", "'stems' mapping"),
    ("stems: {S00: {program_num: 200, midi_saved: true, audio_rendered: true}}", "program_num"),
    ("stems: {S00: {program_num: 1, midi_saved: yes please, audio_rendered: true}}",
     "midi_saved"),
])
def test_bad_metadata_stops_the_build_naming_the_file(tmp_path, content, match):
    root = _one_track(tmp_path)
    path = os.path.join(root, "train", "Track00001", "metadata.yaml")
    os.remove(path)
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    with pytest.raises(slakh_tracks.SlakhFormatError, match=match) as info:
        _build(root, tmp_path)
    assert "metadata.yaml" in str(info.value)


def test_dir_without_split_folders_is_an_error(tmp_path):
    os.makedirs(tmp_path / "slakh" / "Track00001")
    with pytest.raises(slakh_tracks.SlakhFormatError,
                       match=r"slakh: no Slakh2100 split folder; expected .*train"):
        _build(str(tmp_path / "slakh"), tmp_path)


def test_requested_missing_split_is_an_error(slakh_dir, tmp_path):
    with pytest.raises(slakh_tracks.SlakhFormatError, match="test"):
        build_slakh.build(slakh_dir, str(tmp_path), splits=["test"])
    with pytest.raises(ValueError, match="unknown split"):
        build_slakh.build(slakh_dir, str(tmp_path), splits=["omitted"])
