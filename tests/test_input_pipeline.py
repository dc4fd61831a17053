"""The input pipeline end to end: records, crops, sampled rows, hosts, resume, global arrays.

A tiny Slakh2100-format directory (16-kHz FLAC noise stems, one-instrument MIDI files,
metadata.yaml) is built once per session with the real builder
(``data_pipelines.build_slakh.build``) at a 1-s clip and 2-s hop, so every test runs in seconds.
"""

import dataclasses
import os

import numpy as np
import pretty_midi
import pytest
import soundfile
import yaml

from jointist_jax.data import crops, pipeline, records, schema, tracks
from jointist_jax.data.spec import InputSpec

SR = 16000
CLIP_S = 1.0
HOP_S = 2.0
CLIP = int(CLIP_S * SR)
FRAMES = 101
# (program_num, plugin, audio_rendered) of the stems every track has.
STEMS = [(0, "grand_piano", True), (33, "bass_finger", True), (128, "funk_kit", True),
         (40, "violin", False)]
TRAIN_SECONDS = [2.5, 4.3, 1.6, 5.0, 3.1, 2.2]
VALID_SECONDS = [1.3, 2.4, 3.0]


def _write_track(track_dir, seconds, rng):
    n = int(seconds * SR)
    os.makedirs(os.path.join(track_dir, "stems"))
    os.makedirs(os.path.join(track_dir, "MIDI"))
    meta = {"stems": {}}
    mix = np.zeros(n, np.float32)
    for i, (program, plugin, rendered) in enumerate(STEMS):
        stem_id = f"S{i:02d}"
        meta["stems"][stem_id] = {"program_num": program, "plugin_name": plugin + ".nkm",
                                  "midi_saved": True, "audio_rendered": rendered,
                                  "is_drum": program == 128}
        midi = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0 if program == 128 else program, is_drum=program == 128)
        t = 0.1 * i
        while t < seconds:
            length = 0.05 if program == 128 else rng.uniform(0.2, 1.5)
            inst.notes.append(pretty_midi.Note(int(rng.integers(100, 120)), int(rng.integers(36, 80)),
                                               t, t + length))
            t += length + rng.uniform(0.05, 0.6)
        midi.instruments.append(inst)
        midi.write(os.path.join(track_dir, "MIDI", f"{stem_id}.mid"))
        audio = (0.05 * rng.standard_normal(n)).astype(np.float32)
        if rendered:
            soundfile.write(os.path.join(track_dir, "stems", f"{stem_id}.flac"), audio, SR, subtype="PCM_16")
            mix += audio
    soundfile.write(os.path.join(track_dir, "mix.flac"), mix, SR, subtype="PCM_16")
    with open(os.path.join(track_dir, "metadata.yaml"), "w") as f:
        yaml.safe_dump(meta, f)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from data_pipelines import build_slakh

    root = tmp_path_factory.mktemp("pipeline")
    rng = np.random.default_rng(0)
    for split, lengths in (("train", TRAIN_SECONDS), ("validation", VALID_SECONDS)):
        for t, seconds in enumerate(lengths):
            _write_track(str(root / "slakh" / split / f"Track{t:05d}"), seconds, rng)
    out = root / "tfds"
    build_slakh.build(root / "slakh", out, hop_seconds=HOP_S, clip_seconds=CLIP_S, num_shards=3)
    return str(out)


@pytest.fixture(scope="session")
def train_tracks(data_dir):
    return {t.track_id: t for t in tracks.iterate_tracks(data_dir, "train")}


PIPELINE_ARGS = ("mesh", "start_step", "process_index", "process_count")


def make(data_dir, split="train", **kwargs):
    """A one-host pipeline of ``split``; ``kwargs`` are :class:`InputSpec` fields or pipeline arguments."""
    args = dict(global_batch=2, num_positive=2, num_negative=1, seed=0, clip_seconds=CLIP_S,
                process_index=0, process_count=1, num_workers=2, prefetch=1)
    args.update(kwargs)
    placement = {key: args.pop(key) for key in PIPELINE_ARGS if key in args}
    return pipeline.make_train_iterator(data_dir, split, InputSpec(**args), **placement)


def take(pipe, n):
    out = []
    for batch in pipe.local_batches():
        out.append(batch)
        if len(out) == n:
            break
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def find_start(track, crop):
    """Where ``crop`` (float32) starts in the track's mix (noise makes the match unique)."""
    mix = track.mix
    candidates = np.flatnonzero(mix[:len(mix) - len(crop) + 1] == crop[0])
    for s in candidates:
        if np.array_equal(mix[s:s + len(crop)], crop):
            return int(s)
    raise AssertionError("crop not found in the track")


def test_index_fields_match_decoded_records(data_dir):
    ds = records.open_dataset(data_dir)
    assert (ds.hop_samples, ds.clip_samples, ds.sample_rate) == (int(HOP_S * SR), CLIP, SR)
    files = ds.split_files("train")
    assert len(files) == 3
    index = records.scan_index(files)
    with records.RecordReader(ds, index) as reader:
        for r in range(len(index)):
            rec = reader.read(r)
            assert rec["track_id"].decode() == index.track_id[r]
            assert int(rec["window_index"]) == index.window_index[r]
            assert int(rec["window_start"]) == index.window_start[r]
            assert int(rec["track_length"]) == index.track_length[r]
        assert reader.records_read == len(index)


def test_batch_keys_shapes_and_targets(data_dir):
    with make(data_dir) as pipe:
        (batch,) = take(pipe, 1)
    k = 3
    expected = {"waveform": (2, CLIP), "instruments": (2, 40), "class_ids": (2, k), "conditions": (2, k, 40),
                "is_positive": (2, k), "onset_roll": (2, k, FRAMES, 88), "reg_onset_roll": (2, k, FRAMES, 88),
                "frame_roll": (2, k, FRAMES, 88), "mask_roll": (2, k, FRAMES, 88), "source": (2, k, CLIP),
                "source_valid": (2, k)}
    assert {key: v.shape for key, v in batch.items()} == expected
    assert batch["is_positive"].tolist() == [[1, 1, 0]] * 2
    np.testing.assert_array_equal(batch["conditions"].argmax(-1), batch["class_ids"])
    for b in range(2):
        ids = batch["class_ids"][b]
        assert batch["instruments"][b, ids[:2]].all() and not batch["instruments"][b, ids[2]]
        # Negative row: rolls and mask zero, silent valid source.
        assert not batch["mask_roll"][b, 2].any() and not batch["frame_roll"][b, 2].any()
        assert batch["source_valid"][b, 2] == 1 and not batch["source"][b, 2].any()
        for row in range(2):
            cls = ids[row]
            assert batch["source_valid"][b, row] == (0.0 if cls == 11 else 1.0)  # violin: no audio
            assert batch["mask_roll"][b, row].any()


def test_crops_come_from_the_data_with_matching_stems(data_dir, train_tracks):
    with make(data_dir, global_batch=4) as pipe:
        batches = take(pipe, 3)
    for batch in batches:
        for b in range(4):
            start = None
            for track in train_tracks.values():
                try:
                    start = find_start(track, batch["waveform"][b])
                except AssertionError:
                    continue
                break
            assert start is not None
            for row in range(2):
                cls = int(batch["class_ids"][b, row])
                if cls in track.stems:
                    np.testing.assert_array_equal(batch["source"][b, row], track.stems[cls][start:start + CLIP])


def test_same_seed_same_batches_different_seed_different(data_dir):
    with make(data_dir, seed=3) as a, make(data_dir, seed=3, num_workers=1) as b, make(data_dir, seed=4) as c:
        ba, bb, bc = take(a, 4), take(b, 4), take(c, 4)
    for x, y in zip(ba, bb):
        assert_same(x, y)
    assert not all(np.array_equal(x["waveform"], y["waveform"]) for x, y in zip(ba, bc))


def test_resume_equals_fresh_run_without_reading_earlier_batches(data_dir):
    with make(data_dir) as fresh:
        expected = take(fresh, 12)[10:]
    with make(data_dir, start_step=10) as resumed:
        got = take(resumed, 2)
        # Reading and discarding 10 batches would have read 20 records before the first yield.
        assert resumed.reader.records_read < 20
    for x, y in zip(expected, got):
        assert_same(x, y)


def test_all_audio_epochs_cover_crop_starts_uniformly(data_dir):
    with make(data_dir, num_positive=0, num_negative=0, targets=False, stems=False,
              crop_sampling="all_audio") as pipe:
        table, m = pipe.table, pipe.examples_per_epoch
        positions = np.concatenate([crops.epoch_positions(0, e, table.total, m) for e in range(400)])
        records_of = np.searchsorted(table.cumulative, positions, side="right") - 1
        counts = np.bincount(records_of, minlength=len(pipe.index))
        weights = np.diff(table.cumulative)
        np.testing.assert_allclose(counts / counts.sum(), weights / weights.sum(), atol=0.01)
        # Within an epoch every slice of the crop starts is visited once.
        one = np.sort(crops.epoch_positions(0, 0, table.total, m))
        assert np.all(np.diff(one) > 0) and one[-1] < table.total


def _tracks_of(batches, train_tracks):
    found = []
    for batch in batches:
        for crop in batch["waveform"]:
            for track_id, track in train_tracks.items():
                try:
                    find_start(track, crop)
                except AssertionError:
                    continue
                found.append(track_id)
                break
    return found


def test_per_track_epochs_take_one_crop_of_every_track(data_dir, train_tracks):
    """The reference's sampling: an epoch is one crop of each track, whatever its length."""
    with make(data_dir, num_positive=0, num_negative=0, targets=False, stems=False) as pipe:
        assert pipe.examples_per_epoch == len(TRAIN_SECONDS) and pipe.steps_per_epoch == 3
        found = _tracks_of(take(pipe, 6), train_tracks)
    assert len(found) == 12
    for epoch in (found[:6], found[6:]):
        assert sorted(epoch) == sorted(train_tracks)  # every track once per epoch
    assert found[:6] != found[6:]  # each epoch in its own order


def test_per_track_starts_are_uniform_over_the_whole_track(data_dir):
    """A track's crop (and a silent crop's redraw) is uniform over all of its windows' starts."""
    with make(data_dir, num_positive=0, num_negative=0, targets=False, stems=False) as pipe:
        table, starts = pipe.table, pipe.tracks
        longest = int(np.argmax([c[-1] for c in starts.cumulative]))
        rows = starts.records[longest]
        assert len(rows) >= 2  # 5.0 s with a 2-s hop: several windows
        rng = np.random.default_rng(0)
        drawn = [starts.draw(longest, rng, table) for _ in range(20000)]
        per_record = np.array([sum(r == row for r, _ in drawn) for row in rows])
        counts = np.diff(table.cumulative)[rows]
        np.testing.assert_allclose(per_record / len(drawn), counts / counts.sum(), atol=0.015)
        for record, start in drawn[:200]:
            assert table.lo[record] <= start <= table.hi[record]


def test_two_hosts_build_the_one_host_global_batch(data_dir):
    """The global batch depends on (seed, step) only: two hosts' slices, side by side, are the
    batch one host builds alone; so is a resumed host's."""
    with make(data_dir, global_batch=4) as one:
        expected = take(one, 3)
    hosts = [make(data_dir, global_batch=4, process_index=p, process_count=2, start_step=1) for p in range(2)]
    try:
        assert hosts[0].local_batch == 2
        slices = [take(h, 2) for h in hosts]
    finally:
        for h in hosts:
            h.close()
    for step in range(2):
        joined = {key: np.concatenate([slices[0][step][key], slices[1][step][key]]) for key in expected[0]}
        assert_same(joined, expected[step + 1])
    with pytest.raises(ValueError, match="positive multiple of the process count 4"):
        make(data_dir, global_batch=6, process_index=0, process_count=4)


def test_global_arrays_sharded_on_eight_devices(data_dir):
    import jax

    mesh = jax.make_mesh((8,), ("data",))
    spec = InputSpec(global_batch=8, num_positive=1, num_negative=1, seed=0, clip_seconds=CLIP_S, num_workers=2)
    with pipeline.make_train_iterator(data_dir, "train", spec, mesh) as pipe:
        batch = next(iter(pipe))
    assert batch["waveform"].shape == (8, CLIP)
    assert batch["frame_roll"].shape == (8, 2, FRAMES, 88)
    for value in batch.values():
        assert isinstance(value, jax.Array)
        assert value.sharding.spec[0] == "data"
        assert len(value.addressable_shards) == 8
        assert value.addressable_shards[0].data.shape[0] == 1
    with pytest.raises(ValueError, match="not divisible by the mesh's 'data' axis size 8"):
        with pipeline.make_train_iterator(data_dir, "train", InputSpec(global_batch=4, clip_seconds=CLIP_S),
                                          mesh) as pipe:
            next(iter(pipe))


def test_recognizer_stage_and_no_targets(data_dir):
    with make(data_dir, num_positive=0, num_negative=0) as pipe:
        (batch,) = take(pipe, 1)
    assert set(batch) == {"waveform", "instruments"}
    with make(data_dir, targets=False, stems=False) as pipe:
        (batch,) = take(pipe, 1)
    assert set(batch) == {"waveform", "instruments", "class_ids", "conditions", "is_positive"}
    with make(data_dir, targets=False) as pipe:
        (batch,) = take(pipe, 1)
    assert "source" in batch and "frame_roll" not in batch


def test_transcribe_negatives_sets_negative_masks(data_dir):
    with make(data_dir, transcribe_negatives=True) as pipe:
        (batch,) = take(pipe, 1)
    assert (batch["mask_roll"][:, 2] == 1).all() and not batch["frame_roll"][:, 2].any()


def test_evaluation_mode_fixed_crops_padded_last_batch(data_dir):
    valid_tracks = list(tracks.iterate_tracks(data_dir, "validation"))
    assert [t.track_id for t in valid_tracks] == ["Track00000", "Track00001", "Track00002"]
    kwargs = dict(split="validation", random_crop=False, global_batch=2, eval_offset_seconds=1.0)
    with make(data_dir, **kwargs) as pipe:
        batches = list(pipe.local_batches())
    with make(data_dir, **kwargs) as pipe:
        again = list(pipe.local_batches())
    assert len(batches) == 2  # finite: 3 tracks in batches of 2
    for x, y in zip(batches, again):
        assert_same(x, y)
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [1, 1, 1, 0]
    waves = np.concatenate([b["waveform"] for b in batches])
    # 1.3 s < 1 s offset + 1 s clip: starts at 0; the others at 1 s (docs/deviations.md 13: no +1 s).
    for row, (track, start) in enumerate(zip(valid_tracks, [0, SR, SR])):
        np.testing.assert_array_equal(waves[row], track.mix[start:start + CLIP])
    np.testing.assert_array_equal(waves[3], waves[2])  # padding repeats the last crop


def test_evaluation_is_split_across_hosts_with_equal_steps(data_dir):
    kwargs = dict(split="validation", random_crop=False, global_batch=2)
    hosts = [make(data_dir, process_index=p, process_count=2, **kwargs) for p in range(2)]
    try:
        out = [list(h.local_batches()) for h in hosts]
    finally:
        for h in hosts:
            h.close()
    assert len(out[0]) == len(out[1]) == 2
    assert [b["valid"].tolist() for b in out[0]] == [[1.0], [1.0]]
    assert [b["valid"].tolist() for b in out[1]] == [[1.0], [0.0]]


def test_whole_tracks_reassemble(data_dir, train_tracks):
    assert sorted(train_tracks) == [f"Track{t:05d}" for t in range(6)]
    for t, seconds in enumerate(TRAIN_SECONDS):
        track = train_tracks[f"Track{t:05d}"]
        assert track.mix.shape == (int(seconds * SR),) and track.mix.dtype == np.float32
        assert sorted(track.stems) == [0, 10, 38]
        assert set(np.unique(track.notes.classes)) == {0, 10, 11, 38}
        assert np.all(np.diff(track.notes.onsets) >= 0)
        assert track.notes.onsets.max() < seconds
        drums = track.notes.of_class(38)
        assert len(drums.onsets) and set(drums.classes.tolist()) == {38}
        np.testing.assert_allclose(drums.offsets - drums.onsets, 0.05, atol=1e-3)


def test_bad_arguments_give_clear_errors(data_dir, tmp_path):
    with pytest.raises(ValueError, match="global_batch 3 must be a positive multiple of the process count 2"):
        make(data_dir, global_batch=3, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="split 'nosuch'.*available"):
        make(data_dir, split="nosuch")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no prepared slakh2100"):
        make(str(tmp_path))
    with pytest.raises(ValueError, match="longer than the dataset's clip"):
        make(data_dir, clip_seconds=2.0)


def test_lazy_audio_crops_equal_full_decoding(data_dir):
    ds = records.open_dataset(data_dir)
    index = records.scan_index(ds.split_files("train"))
    rng = np.random.default_rng(0)
    with records.RecordReader(ds, index) as reader:
        for r in range(len(index)):
            full = reader.read(r)
            lazy = reader.read_lazy(r)
            n = full["mix"].shape[0]
            assert lazy.window_length == n and lazy.num_stems == full["stems"].shape[0]
            for key in ("note_class", "note_onset", "stem_classes", "window_start"):
                np.testing.assert_array_equal(lazy[key], full[key])
            for offset in (0, int(rng.integers(0, n)), n - 5):
                np.testing.assert_array_equal(lazy.mix(offset, CLIP), full["mix"][offset:offset + CLIP])
                for rows in ([0], [2], [0, 2], [1, 2], []):
                    np.testing.assert_array_equal(lazy.stems(rows, offset, CLIP),
                                                  full["stems"][rows, offset:offset + CLIP])


def test_validation_split_without_a_long_enough_track_is_an_error(data_dir, monkeypatch):
    monkeypatch.setattr(crops, "eval_crops", lambda *a, **k: [])  # every track shorter than a clip
    with pytest.raises(ValueError, match="'validation' .* has no track at least one 1.0-s clip long"):
        make(data_dir, split="validation", random_crop=False)


def test_layout_from_config_names():
    assert records._layout_from_config_name("clips") == {"hop_seconds": 30.0, "clip_seconds": 10.0,
                                                         "sample_rate": 16000.0}
    assert records._layout_from_config_name("clips_hop2p5_clip10_sr16000") == {
        "hop_seconds": 2.5, "clip_seconds": 10.0, "sample_rate": 16000.0}
    assert records._layout_from_config_name("other") == {}


@pytest.mark.parametrize("packing", [schema.DEFAULT_PACKING, schema.Packing(2.5, 10.0, 16000),
                                     schema.Packing(30.0, 4.0, 22050), schema.Packing(0.25, 1.5, 8000)])
def test_the_builder_names_a_packing_the_reader_reads_back(packing):
    """The builder's config (its folder name) and the reader's decoding use one schema."""
    from data_pipelines.slakh2100 import make_config

    config = make_config(packing.hop_seconds, packing.clip_seconds, packing.sample_rate)
    assert config.name == schema.config_name(packing)
    assert schema.packing_from_config_name(config.name) == packing
    assert (config.hop_seconds, config.clip_seconds, config.sample_rate) == dataclasses.astuple(packing)


def test_steps_per_epoch_counts_tracks_or_clip_lengths_of_crop_starts(data_dir):
    assert pipeline.steps_per_epoch(data_dir, "train", InputSpec(global_batch=2, clip_seconds=CLIP_S)) == 3
    steps = pipeline.steps_per_epoch(data_dir, "train",
                                     InputSpec(global_batch=2, clip_seconds=CLIP_S, crop_sampling="all_audio"))
    # Crop starts per track: N - clip + 1 (every start lies in exactly one window).
    total = sum(int(s * SR) - CLIP + 1 for s in TRAIN_SECONDS)
    assert steps == -(-total // CLIP) // 2


@pytest.mark.parametrize("kind", ["zlib", "bytes"])
def test_record_crops_from_encoded_audio(kind):
    import zlib

    rng = np.random.default_rng(0)
    mix = rng.integers(-30000, 30000, 500).astype(np.int16)
    stems = rng.integers(-30000, 30000, (3, 500)).astype(np.int16)
    encode = (lambda a: zlib.compress(a.tobytes())) if kind == "zlib" else (lambda a: a.tobytes())
    record = records.Record({"window_start": 0}, {"mix": (kind, encode(mix), (-1,), np.int16),
                                                  "stems": (kind, encode(stems), (3, 500), np.int16)})
    assert record.window_length == 500 and record.num_stems == 3
    np.testing.assert_array_equal(record.mix(480, 50), mix[480:])
    np.testing.assert_array_equal(record.stems([2, 0], 100, 50), stems[[2, 0], 100:150])
    with pytest.raises(IndexError, match="outside 0..2"):
        record.stems([3], 0, 10)
