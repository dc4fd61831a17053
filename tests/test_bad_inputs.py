"""What bad input looks like (README "What bad input looks like"): for each case, the message the
user sees and what is kept (nothing lost, nothing half-written)."""

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from jointist_jax.data import pipeline, records, tracks
from jointist_jax.data.spec import InputSpec
from tfrecord_helpers import copy_dataset, framing


def _snapshot(folder) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes."""
    folder = Path(folder)
    return {os.fspath(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _open_train(data):
    return pipeline.make_train_iterator(data, "train", InputSpec(global_batch=2, clip_seconds=2.0), process_index=0,
                                        process_count=1)


# --- the dataset ------------------------------------------------------------------------------

def test_truncated_shard(tiny_tfds_dir, tmp_path, caplog):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-train.tfrecord-*"))[2]
    (header, length), = framing(shard)
    shard.write_bytes(shard.read_bytes()[:-100])  # an interrupted copy
    before = _snapshot(data)
    with caplog.at_level(logging.WARNING, logger=records.__name__):
        with pytest.raises(records.CorruptRecordError) as caught:
            _open_train(data)
    assert str(caught.value) == (
        f"{str(shard)!r}: corrupted record 0 at byte {header}: it needs bytes up to {header + 12 + length + 4}, "
        f"the shard has {header + 12 + length + 4 - 100} (the shard is truncated)")
    assert f"shard {shard.name} is {shard.stat().st_size} bytes" in caplog.text  # why the index is not used
    with pytest.raises(records.CorruptRecordError, match="the shard is truncated"):
        next(tracks.iterate_tracks(data, "train"))
    assert _snapshot(data) == before


def test_shard_missing_from_a_split(tiny_tfds_dir, tmp_path):
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    shard = sorted(data.glob("slakh2100-validation.tfrecord-*"))[1]
    shard.unlink()
    before = _snapshot(data)
    with pytest.raises(FileNotFoundError, match=rf"split 'validation' of {str(data)!r}: missing shard files "
                                                rf"\['{shard.name}'\]"):
        next(tracks.iterate_tracks(data, "validation"))
    with pytest.raises(FileNotFoundError, match=shard.name):
        pipeline.make_train_iterator(data, "validation", InputSpec(global_batch=2, clip_seconds=2.0, random_crop=False),
                                     process_index=0, process_count=1)
    assert _snapshot(data) == before


def test_index_from_another_build(tiny_tfds_dir, tmp_path, caplog):
    """A rebuild that changes dataset_info.json (here: its metadata) beside an index saved before."""
    data = copy_dataset(tiny_tfds_dir, tmp_path)
    info = data / "dataset_info.json"
    info.write_text(info.read_text().replace('"version": "1.0.0"', '"version": "1.0.0" '))
    before = _snapshot(data)
    with caplog.at_level(logging.WARNING, logger=records.__name__):
        with _open_train(data) as pipe:
            index = pipe.index
    assert (f"not using the record index {data / 'train.record_index.npz'}: it was saved for another build "
            f"(its dataset_info.json fingerprint differs); scanning the shards of split 'train' instead") in caplog.text
    fresh = records.scan_index(records.open_dataset(data).split_files("train"))
    np.testing.assert_array_equal(index.offset, fresh.offset)
    np.testing.assert_array_equal(index.track_id, fresh.track_id)
    assert _snapshot(data) == before  # the stale index is left for the build to replace


# --- runs ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """A tiny freshly initialised transcription run and an ir run, saved as the trainer saves."""
    from flax import nnx

    import configs.ir
    import configs.transcription
    from jointist_jax import runs, stages

    root = tmp_path_factory.mktemp("saved_runs")
    paths = {}
    for name, module in (("transcription", configs.transcription), ("ir", configs.ir)):
        config = module.get_config("runlocal")
        runs.save_model(root / name, config, stages.build_model(config, nnx.Rngs(0)))
        paths[name] = root / name
    return paths


def _transcribe(capsys, *argv):
    from jointist_jax.inference import cli

    code = cli.main([str(a) for a in argv] + ["--quiet"])
    return code, capsys.readouterr().err


def _tone(path, seconds=1.0):
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16000 * seconds)) / 16000), 16000,
                    subtype="FLOAT")
    return path


def _transcribe_a_broken_run(saved_runs, tmp_path, capsys, break_run) -> str:
    """Transcribes with a copy of the saved transcription run broken by ``break_run(run)``: the
    command must exit 2, write no output folder and leave the run as it found it. Returns stderr."""
    run = tmp_path / "run"
    shutil.copytree(saved_runs["transcription"], run)
    break_run(run)
    before = _snapshot(run)
    code, err = _transcribe(capsys, "--checkpoint", run, "--audio", _tone(tmp_path / "tone.wav"),
                            "--out", tmp_path / "out", "--instruments", "piano")
    assert code == 2
    assert not (tmp_path / "out").exists()
    assert _snapshot(run) == before
    return err


def test_corrupt_config_json_in_a_workdir(saved_runs, tmp_path, capsys):
    def cut_config_short(run):
        (run / "config.json").write_text('{"stage": "transcription", "model": {')

    err = _transcribe_a_broken_run(saved_runs, tmp_path, capsys, cut_config_short)
    run = tmp_path / "run"
    assert f"--checkpoint {str(run)!r}: unreadable config.json ({str(run / 'config.json')!r} is not valid JSON" in err


def test_checkpoint_step_with_a_missing_array_file(saved_runs, tmp_path, capsys):
    def delete_an_array_file(run):
        arrays = sorted(p for p in (run / "checkpoints" / "0").rglob("*") if p.is_file() and "/d/" in str(p))
        assert arrays, "the checkpoint stores its arrays in ocdbt data files"
        arrays[0].unlink()

    err = _transcribe_a_broken_run(saved_runs, tmp_path, capsys, delete_an_array_file)
    assert f"--checkpoint {str(tmp_path / 'run')!r}: cannot restore the checkpoint: it is corrupted" in err


def test_init_from_another_stages_run(saved_runs, tiny_tfds_dir, tmp_path):
    import configs.transcription
    from jointist_jax.train import trainer

    config = configs.transcription.get_config("runlocal")
    config.data.data_dir = str(tiny_tfds_dir)
    config.init_from = str(saved_runs["ir"])
    workdir = tmp_path / "work"
    before = _snapshot(saved_runs["ir"])
    with pytest.raises(ValueError) as caught:
        trainer.train_and_evaluate(config, str(workdir))
    assert str(caught.value) == (f"config.init_from={str(saved_runs['ir'])!r} is a 'ir' run; a 'transcription' "
                                 f"run can start from the same stage")
    assert _snapshot(saved_runs["ir"]) == before
    assert not workdir.exists()  # checked before anything is written


def test_nan_inf_and_empty_audio_given_to_transcribe(saved_runs, tmp_path, capsys):
    songs = tmp_path / "songs"
    songs.mkdir()
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
        audio[8000] = value
        soundfile.write(songs / f"{name}.wav", audio.astype(np.float32), 16000, subtype="FLOAT")
    soundfile.write(songs / "empty.wav", np.zeros(0, np.float32), 16000)
    code, err = _transcribe(capsys, "--checkpoint", saved_runs["transcription"], "--audio", songs,
                            "--out", tmp_path / "out", "--instruments", "piano")
    assert code == 1
    for name in ("nan", "inf"):
        assert f"skipping song: {str(songs / f'{name}.wav')!r}: the audio contains NaN or infinite samples" in err
    assert f"skipping song: {str(songs / 'empty.wav')!r}: the audio is empty (0 samples)" in err
    assert "3 of 3 songs failed" in err
    assert list((tmp_path / "out").iterdir()) == []


# --- a full local disk -----------------------------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 1-MiB tmpfs (needs root); skipped where it cannot be mounted."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_staging_disk_during_a_bucket_build(tiny_slakh_dir, full_disk, gcs):
    from data_pipelines import build_slakh
    from jointist_jax import storage

    bucket = gcs.new_bucket("full-disk")
    with pytest.raises(OSError) as caught:
        build_slakh.build(tiny_slakh_dir, f"gs://{bucket}/tfds", splits=["train"], hop_seconds=2.0,
                          clip_seconds=2.0, workers=1, staging_dir=full_disk)
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert f"the staging folder {full_disk}/jointist-build-" in message
    assert f"ran out of space while building the dataset for gs://{bucket}/tfds/slakh2100/" in message
    assert "No space left on device" in message and "nothing was uploaded" in message
    assert os.listdir(full_disk) == []  # the staging copy is removed
    assert storage.files_under(f"gs://{bucket}") == []  # and nothing reached the bucket


def _fill(folder) -> None:
    """Fills the file system of ``folder`` (a filler file) until it has no room left."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 512)
        except OSError as error:
            assert error.errno == errno.ENOSPC


def _event_steps(data: bytes, tmp_path) -> list[int]:
    import tensorflow as tf

    local = tmp_path / "events"
    local.write_bytes(data)
    return [e.step for e in tf.compat.v1.train.summary_iterator(str(local)) for v in e.summary.value if v.tag == "loss"]


def test_full_disk_while_staging_tensorboard_events_of_a_bucket_run(full_disk, gcs, monkeypatch, caplog, tmp_path):
    import tempfile

    from jointist_jax import storage
    from jointist_jax.train import summaries

    workdir = f"gs://{gcs.new_bucket('full-events')}/run"
    checkpoint = f"{workdir}/checkpoints/1/commit_success.txt"  # stands for the checkpoints in the bucket
    storage.write_text(checkpoint, "a committed checkpoint")
    monkeypatch.setattr(tempfile, "tempdir", str(full_disk))  # as TMPDIR=<the full disk> would
    writer = summaries.SummaryWriter(f"{workdir}/tensorboard")
    writer.scalars(1, {"loss": 1.0})
    (staging,) = full_disk.glob("jointist-mirror-*")
    (events,) = storage.files_under(f"{workdir}/tensorboard")
    uploaded = events.read_bytes()

    _fill(full_disk)
    with caplog.at_level(logging.WARNING, logger=storage.__name__):
        for step in range(2, 500):  # an event is ~60 bytes: the events file's last page fills up
            writer.scalars(step, {"loss": float(step)})  # never raises: the run carries on
            if "No space left on device" in caplog.text:
                break
        for later in range(step + 1, step + 5):
            writer.scalars(later, {"loss": float(later)})
        writer.close()
    warning = caplog.text
    assert (f"TensorBoard events of step {step} for {workdir}/tensorboard could not be written to the staging "
            f"folder {staging} (in the system's temporary folder: set TMPDIR to a folder with room)") in warning
    assert "No space left on device; no more are saved in this run" in warning and "the run carries on" in warning
    assert warning.count("could not be written") == 1, warning  # once, not at every step
    assert storage.path(checkpoint).read_text() == "a committed checkpoint"
    kept = events.read_bytes()
    assert kept.startswith(uploaded)  # the events in the bucket stay: those of step 1 ...
    assert _event_steps(kept, tmp_path) == list(range(1, step))  # ... and each step up to the full disk
    assert os.listdir(full_disk) == ["filler"]  # the staging folder is removed at the end
