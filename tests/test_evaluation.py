"""launch/eval.py and jointist_jax.evaluation on the tiny synthetic dataset.

Tiny freshly initialised runs (saved with `save_model`) exercise every stage's path; an oracle
predictor that returns the reference rolls and stems checks that notes, frames and stems are
aligned with the references (near-perfect scores), which a shifted or mislabelled output fails.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jointist_jax import instruments, run_dir
from jointist_jax import runs as runs_lib
from jointist_jax.data import tracks
from jointist_jax.evaluation import EvalOptions, evaluate_run, references, reporting, runner, watch
from jointist_jax.inference.predictor import SongPrediction
from jointist_jax.inference.windows import WindowSpec
from jointist_jax.music import FRAMES_PER_SECOND
from jointist_jax.rolls import note_rolls, reference_frame_rolls

ROOT = Path(__file__).resolve().parents[1]
SPLIT = "validation"  # two songs in the tiny dataset


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workdirs of tiny freshly initialised joint, transcription, separation and ir runs."""
    from flax import nnx

    import configs.ir
    import configs.joint_scratch
    import configs.separation
    import configs.transcription
    from jointist_jax import stages

    root = tmp_path_factory.mktemp("eval_runs")
    paths = {}
    for name, module in (("joint", configs.joint_scratch), ("transcription", configs.transcription),
                         ("separation", configs.separation), ("ir", configs.ir)):
        config = module.get_config("runlocal")
        runs_lib.save_model(root / name, config, stages.build_model(config, nnx.Rngs(0)), step=7)
        paths[name] = root / name
    return paths


# ------------------------------------------------------------------------------ references
def test_reference_rolls_and_notes_follow_the_track(tiny_tfds_dir):
    track = next(tracks.iterate_tracks(tiny_tfds_dir, SPLIT))
    notes = references.reference_notes(track)
    assert sorted(notes) == sorted(int(c) for c in track.classes)
    assert sum(len(n) for n in notes.values()) == len(track.notes.pitches)
    frames = len(track.mix) // 160 + 1
    rolls = reference_frame_rolls(notes, frames)
    for cls, roll in rolls.items():
        assert roll.shape == (frames, 88)
        first = int(np.argmin(notes[cls].onsets))
        on = int(round(notes[cls].onsets[first] * FRAMES_PER_SECOND))
        assert roll[on, notes[cls].pitches[first] - 21] == 1.0
    labels = references.recognition_labels(track, instruments.NUM_CLASSES)
    assert labels.sum() == len(track.classes) and labels[track.classes].all()


# ------------------------------------------------------------------------------ oracle
class OneGroup:
    """The predictor interface's grouping for a test double that answers every instrument in one
    call of its ``predict``."""

    def instrument_groups(self, length, class_ids, separate):
        return [list(class_ids)]

    def predict_groups(self, waveform, groups, *, separate=False, progress=None):
        for group in groups:
            yield self.predict(waveform, group, separate=separate, progress=progress)


class OraclePredictor(OneGroup):
    """Returns each song's reference onset/frame rolls and stems as 'predictions'."""

    can_transcribe = can_separate = True
    can_recognize = False
    spec = WindowSpec()

    def __init__(self, data_dir):
        self.songs = {t.mix.tobytes(): t for t in tracks.iterate_tracks(data_dir, SPLIT)}

    def predict(self, waveform, class_ids, *, separate=False, progress=None):
        track = self.songs[np.asarray(waveform, np.float32).tobytes()]
        frames = len(waveform) // 160 + 1
        notes = references.reference_notes(track)
        onset = np.zeros((len(class_ids), frames, 88), np.float32)
        frame = np.zeros_like(onset)
        for k, cls in enumerate(class_ids):
            if cls in notes:
                rolls = note_rolls(notes[cls].onsets, notes[cls].offsets, notes[cls].pitches, start=0.0,
                                           seconds=(frames - 1) / FRAMES_PER_SECOND)
                onset[k], frame[k] = rolls["onset_roll"][:frames], rolls["frame_roll"][:frames]
        stems = np.stack([track.stems.get(c, np.zeros_like(track.mix)) for c in class_ids])
        return SongPrediction(class_ids=list(class_ids), reg_onset_output=onset, frame_output=frame, waveform=stems)


def test_oracle_predictions_score_near_perfectly(runs, tiny_tfds_dir, monkeypatch):
    monkeypatch.setattr(runner, "Predictor", lambda *a, **k: OraclePredictor(tiny_tfds_dir))
    result = evaluate_run(runs["joint"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=1))
    s = result.scalars
    assert s["num_songs"] == 2 and result.step == 7 and result.stage == "joint"
    assert s["gt_instruments/frame_f1/flat"] == pytest.approx(1.0)
    assert s["gt_instruments/frame_f1/instrument_wise"] == pytest.approx(1.0)
    # Same-pitch notes played back to back fuse in a roll, so a few notes may be lost: not many.
    assert s["gt_instruments/note_f1/flat"] > 0.95
    assert s["gt_instruments/note_f1/instrument_wise"] > 0.95
    # The reference's flat notes (OR'ed rolls decoded again): every fused reference note (a run of
    # frames) is found, but each oracle onset inside a run starts one more estimated note, so the
    # paper's flat precision falls where ours stays 1 (the synthetic parts repeat pitches legato).
    assert s["gt_instruments/note_recall_paper_compat/flat"] == 1.0
    assert s["gt_instruments/note_precision_paper_compat/flat"] < 0.9
    assert s["gt_instruments/mt3/onset_offset_program_f1/flat"] > 0.8
    # Exact stems: the error power hits the 1e-8 floor, so SDR = 10 log10(stem power / 1e-8).
    for song in tracks.iterate_tracks(tiny_tfds_dir, SPLIT):
        scored = next(row["gt_instruments"]["sdr"] for row in result.songs if row["track_id"] == song.track_id)
        assert scored == pytest.approx({instruments.CLASS_NAMES[c]: 10 * np.log10(np.mean(stem.astype(np.float64) ** 2) / 1e-8)
                                        for c, stem in song.stems.items() if c in song.classes}, abs=1e-3)
    assert "predicted_instruments/note_f1/flat" not in s  # no recognizer given
    assert set(result.per_class["gt_instruments/note_f1"]) == {
        instruments.CLASS_NAMES[c] for song in tracks.iterate_tracks(tiny_tfds_dir, SPLIT) for c in song.classes}
    assert len(result.media) == 1 and result.media[0].stems


class CropRecognizer:
    """A recognizer that records what it is given: 0.9 for piano and bass, 0.2 elsewhere."""

    can_transcribe = can_separate = False
    can_recognize = True
    spec = WindowSpec()

    def __init__(self):
        self.calls = []

    def recognize(self, waveform, progress=None):
        self.calls.append(np.asarray(waveform))
        probabilities = np.full((self.spec.num_windows(len(waveform)), instruments.NUM_CLASSES), 0.2, np.float32)
        probabilities[:, [instruments.class_index("Piano"), instruments.class_index("Bass")]] = 0.9
        return probabilities


def test_recognition_is_also_scored_on_the_papers_fixed_crop(runs, tiny_tfds_dir, monkeypatch):
    """The tiny songs last 5 s, so the crop is shrunk to 2 s from 1 s on (the rule is the same)."""
    from jointist_jax.metrics import recognition_metrics

    fake = CropRecognizer()
    monkeypatch.setattr(runner, "Predictor", lambda *a, **k: fake)
    monkeypatch.setattr(runner, "PAPER_CROP", recognition_metrics.PaperCropProtocol(2.0, 1.0, 1.0))
    result = evaluate_run(runs["ir"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=0))
    labels, crops = [], []
    for song in tracks.iterate_tracks(tiny_tfds_dir, SPLIT):
        n = song.notes
        inside = ((1.0 < n.onsets) & (n.onsets < 3.0)) | ((1.0 < n.offsets) & (n.offsets < 3.0))
        assert inside.any(), "the tiny songs have notes between 1 and 3 s"
        labels.append(np.isin(np.arange(instruments.NUM_CLASSES), n.classes[inside]).astype(int))
        crops.append(song.mix[16000:48000])
    # Whole songs first, then each song's crop: samples 1-3 s.
    assert len(fake.calls) == 4 and all(np.array_equal(fake.calls[2 * i + 1], crop) for i, crop in enumerate(crops))
    probabilities = np.full((2, instruments.NUM_CLASSES), 0.2)
    probabilities[:, [instruments.class_index("Piano"), instruments.class_index("Bass")]] = 0.9
    expected = recognition_metrics.paper_compat_recognition_scores(np.stack(labels), probabilities)
    s = result.scalars
    assert s["recognition/ir_paper_compat/num_crops"] == 2.0
    for name, value in expected.scalars.items():
        assert s[f"recognition/{name}"] == pytest.approx(value), name
    assert [song["paper_compat_crop_seconds"] for song in result.songs] == [[1.0, 3.0], [1.0, 3.0]]
    assert "recognition/ir_mAP/macro" in s  # ours, over whole songs, stays beside it


class CropSeparator(OneGroup):
    """A standalone separator that records its calls: each class's stem is half the mix."""

    can_transcribe = can_recognize = False
    can_separate = True
    spec = WindowSpec()

    def __init__(self):
        self.calls = []

    def predict(self, waveform, class_ids, *, separate=False, progress=None):
        assert separate
        self.calls.append((np.asarray(waveform), list(class_ids)))
        stems = np.stack([0.5 * np.asarray(waveform)] * len(class_ids))
        return SongPrediction(class_ids=list(class_ids), reg_onset_output=None, frame_output=None, waveform=stems)


def test_standalone_separator_is_also_scored_on_the_papers_fixed_crop(runs, tiny_tfds_dir, monkeypatch):
    """As the reference tests its S baseline: one crop per song (shrunk to 2 s from 1 s on for the
    5-s songs), its labelled classes separated from the crop alone."""
    from jointist_jax.metrics import recognition_metrics
    from jointist_jax.metrics.separation_metrics import sdr

    fake = CropSeparator()
    monkeypatch.setattr(runner, "Predictor", lambda *a, **k: fake)
    monkeypatch.setattr(runner, "PAPER_CROP", recognition_metrics.PaperCropProtocol(2.0, 1.0, 1.0))
    result = evaluate_run(runs["separation"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=0))
    songs = list(tracks.iterate_tracks(tiny_tfds_dir, SPLIT))
    crop_calls = fake.calls[0::2]  # per song: its crop, then the whole song
    assert len(fake.calls) == 4
    every, per_song = [], []
    for song, (waveform, classes), row in zip(songs, crop_calls, result.songs):
        n = song.notes
        inside = ((1.0 < n.onsets) & (n.onsets < 3.0)) | ((1.0 < n.offsets) & (n.offsets < 3.0))
        assert classes == sorted(set(n.classes[inside].tolist()))
        mix = song.mix[16000:48000]
        assert np.array_equal(waveform, mix)
        expected = {c: sdr(song.stems[c][16000:48000], 0.5 * mix) for c in classes if c in song.stems}
        assert row["sdr_paper_compat"] == pytest.approx({instruments.CLASS_NAMES[c]: v for c, v in expected.items()})
        every += list(expected.values())
        per_song.append(np.mean(list(expected.values())))
    s = result.scalars
    assert s["gt_instruments/sdr_paper_compat/num_crops"] == 2.0
    assert s["gt_instruments/sdr_paper_compat/source_wise"] == pytest.approx(np.mean(every))
    assert s["gt_instruments/sdr_paper_compat/piece_wise"] == pytest.approx(np.mean(per_song))
    # Whole songs stay beside it, and differ from it.
    whole = [sdr(song.stems[c], 0.5 * song.mix) for song in songs for c in song.classes if c in song.stems]
    assert s["gt_instruments/sdr/source_wise"] == pytest.approx(np.mean(whole))
    assert s["gt_instruments/sdr/source_wise"] != pytest.approx(s["gt_instruments/sdr_paper_compat/source_wise"])
    assert "gt_instruments/sdr_paper_compat" in reporting.charted_metrics(result)


def test_joint_model_has_no_crop_separation_score(runs, tiny_tfds_dir, monkeypatch):
    """The reference tests its joint model on whole songs only."""
    monkeypatch.setattr(runner, "Predictor", lambda *a, **k: OraclePredictor(tiny_tfds_dir))
    result = evaluate_run(runs["joint"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=0, max_songs=1))
    assert "gt_instruments/sdr/source_wise" in result.scalars
    assert not any("sdr_paper_compat" in name for name in result.scalars)


# ------------------------------------------------------------------------------ real models
@pytest.mark.slow
def test_joint_run_with_recognizer_reports_both_settings_and_writes_everything(runs, tiny_tfds_dir, tmp_path):
    options = EvalOptions(split=SPLIT, media_songs=1, max_rows=4)
    result = evaluate_run(runs["joint"], tiny_tfds_dir, options, ir_path=runs["ir"])
    for setting in ("gt_instruments", "predicted_instruments"):
        for name in ("note_f1/flat", "note_f1/piece_wise", "note_f1/instrument_wise", "note_with_offset_f1/flat",
                     "note_f1_paper_compat/flat", "frame_f1/flat", "mt3/onset_offset_program_f1/full_program",
                     "sdr/source_wise", "sdr/piece_wise", "sdr/instrument_wise"):
            assert 0.0 <= result.scalars[f"{setting}/{name}"] <= 1.0 or name.startswith("sdr")
    assert "recognition/ir_mAP/macro" in result.scalars and "recognition/ir_f1/samples" in result.scalars
    assert all("recognized_instruments" in song for song in result.songs)

    folder = reporting.write_files(tmp_path / "out", result, run_path=str(runs["joint"]), data_dir=str(tiny_tfds_dir),
                                   options=options)
    assert folder == tmp_path / "out" / SPLIT / "7"
    document = json.loads((folder / "metrics.json").read_text())
    assert document["scalars"] == pytest.approx(result.scalars) and len(document["songs"]) == 2
    assert (folder / "charts" / "gt_instruments__note_f1.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "charts" / "gt_instruments__sdr.png").is_file()
    song = folder / "songs" / result.media[0].track_id
    assert (song / "pianoroll.png").is_file() and (song / "mix.wav").is_file()
    assert sorted(p.name for p in (song / "stems").glob("*.wav") if ".reference" not in p.name)
    assert not list((tmp_path / "out" / SPLIT).glob(".partial-*"))

    logdir = tmp_path / "tb"
    reporting.write_tensorboard(logdir, result)
    tags = _tensorboard_tags(logdir)
    assert "gt_instruments/note_f1/flat" in tags and "predicted_instruments/sdr/source_wise" in tags
    assert "gt_instruments/per_instrument/note_f1" in tags
    assert f"songs/{result.media[0].track_id}/pianoroll" in tags
    assert f"songs/{result.media[0].track_id}/mix" in tags


def _tensorboard_tags(logdir) -> set[str]:
    import tensorflow as tf

    tags = set()
    for path in Path(logdir).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_ir_and_separation_runs_get_their_own_metrics(runs, tiny_tfds_dir):
    ir = evaluate_run(runs["ir"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=0))
    assert "recognition/ir_mAP/macro" in ir.scalars
    assert not any(name.startswith("gt_instruments") for name in ir.scalars)
    separation = evaluate_run(runs["separation"], tiny_tfds_dir, EvalOptions(split=SPLIT, max_songs=1))
    assert "gt_instruments/sdr/source_wise" in separation.scalars
    assert not any("note_f1" in name for name in separation.scalars)
    assert separation.scalars["num_songs"] == 1
    with pytest.raises(ValueError, match="ir run"):
        evaluate_run(runs["ir"], tiny_tfds_dir, EvalOptions(split=SPLIT), ir_path=runs["ir"])


def test_failed_write_leaves_nothing_behind(runs, tiny_tfds_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "Predictor", lambda *a, **k: OraclePredictor(tiny_tfds_dir))
    result = evaluate_run(runs["joint"], tiny_tfds_dir, EvalOptions(split=SPLIT, media_songs=1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(reporting.audio_io, "write_wav", broken)
    with pytest.raises(OSError, match="disk full"):
        reporting.write_files(tmp_path, result, run_path="r", data_dir="d", options=EvalOptions())
    assert list((tmp_path / result.split).iterdir()) == []


def test_options_are_checked():
    with pytest.raises(ValueError, match="max_songs"):
        EvalOptions(max_songs=-1)
    with pytest.raises(ValueError, match="ir_aggregate"):
        EvalOptions(ir_aggregate="all")
    with pytest.raises(ValueError, match="frame_threshold"):
        EvalOptions(frame_threshold=1.5)


# ------------------------------------------------------------------------------ watch
def test_follow_evaluates_each_checkpoint_once_until_the_last_step(tmp_path):
    workdir, out = tmp_path / "run", tmp_path / "eval"
    (workdir / "checkpoints" / "10").mkdir(parents=True)
    (workdir / "checkpoints" / "20.orbax-checkpoint-tmp-1").mkdir()  # not finalised yet
    (out / "test" / "10").mkdir(parents=True)
    (out / "test" / "10" / "metrics.json").write_text("{}")  # evaluated by an earlier watcher
    seen = []

    def evaluate(step):
        seen.append(step)
        (out / "test" / str(step)).mkdir(parents=True)
        (out / "test" / str(step) / "metrics.json").write_text("{}")

    def sleep(_):  # the trainer makes progress while the watcher sleeps
        if not (workdir / "checkpoints" / "20").exists():
            (workdir / "checkpoints" / "20.orbax-checkpoint-tmp-1").rename(workdir / "checkpoints" / "20")
        else:
            (workdir / "checkpoints" / "30").mkdir()

    steps = watch.follow(workdir, out, "test", evaluate, final_step=30, poll_seconds=0, sleep=sleep)
    assert steps == seen == [20, 30]


def test_follow_stops_when_idle_and_skips_rotated_checkpoints(tmp_path):
    workdir = tmp_path / "run"
    for step in (1, 2):
        (workdir / "checkpoints" / str(step)).mkdir(parents=True)
    now = [0.0]

    def evaluate(step):
        if step == 1:  # the trainer deleted it (keep_checkpoints) before it could be read
            os.rmdir(workdir / "checkpoints" / "1")
            raise FileNotFoundError("gone")
        (tmp_path / "eval" / "test" / "2").mkdir(parents=True)
        (tmp_path / "eval" / "test" / "2" / "metrics.json").write_text("{}")

    def sleep(seconds):
        now[0] += seconds

    steps = watch.follow(workdir, tmp_path / "eval", "test", evaluate, final_step=None, poll_seconds=10,
                         idle_timeout=30, sleep=sleep, clock=lambda: now[0])
    assert steps == [2] and now[0] == 30

    def missing_data(step):
        raise FileNotFoundError("no dataset")

    (workdir / "checkpoints" / "3").mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset"):
        watch.follow(workdir, tmp_path / "eval", "test", missing_data, final_step=None, sleep=sleep)


# ------------------------------------------------------------------------------ launch/eval.py
def _eval_cli(*args, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "launch" / "eval.py"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_eval_cli_writes_metrics_and_tensorboard(runs, tiny_tfds_dir, tmp_path):
    out = tmp_path / "out"
    # Without --config: the run's config.json, and --data_dir for the dataset.
    proc = _eval_cli(f"--workdir={runs['transcription']}", f"--data_dir={tiny_tfds_dir}", "--split=test",
                     f"--out={out}", "--media_songs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gt_instruments/note_f1/flat" in proc.stdout
    assert (out / "test" / "7" / "metrics.json").is_file()
    assert "gt_instruments/frame_f1/flat" in _tensorboard_tags(runs["transcription"] / "tensorboard" / "eval_test")


def test_eval_cli_errors_name_the_problem(runs, tmp_path):
    proc = _eval_cli("--config=joint_pretrained:runlocal", f"--workdir={runs['transcription']}")
    assert proc.returncode == 2 and "'joint' config" in proc.stderr and "'transcription' run" in proc.stderr
    proc = _eval_cli("--config=transcription:runlocal", f"--workdir={runs['transcription']}", "--checkpoint=99")
    assert proc.returncode == 2 and "--checkpoint 99" in proc.stderr and "[7]" in proc.stderr
    proc = _eval_cli("--config=transcription:runlocal", f"--workdir={runs['transcription']}", "--checkpoint=best")
    assert proc.returncode == 2 and "--checkpoint best" in proc.stderr and "carries a validation loss" in proc.stderr
    proc = _eval_cli("--config=transcription:runlocal", f"--workdir={tmp_path}")
    assert proc.returncode == 2 and "neither a workdir" in proc.stderr
    # The dataset: --config's (with its overrides) or, without --config, the run's config.json's.
    proc = _eval_cli("--config=transcription:runlocal", f"--workdir={runs['transcription']}",
                     f"--config.data.data_dir={tmp_path / 'from_config'}")
    assert proc.returncode == 2 and str(tmp_path / "from_config") in proc.stderr, proc.stderr[-2000:]
    copy = tmp_path / "copy"
    shutil.copytree(runs["transcription"], copy)
    config = runs_lib.open(copy).config
    config.data.data_dir = str(tmp_path / "from_run")
    run_dir.RunDir.at(copy).write_config(config)
    proc = _eval_cli(f"--workdir={copy}")
    assert proc.returncode == 2 and str(tmp_path / "from_run") in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_compare_untrained_reads_the_run_and_its_saved_metrics(runs, tiny_tfds_dir, tmp_path):
    """The demo's step 6: the run's held-out scores (its eval metrics.json) beside the same model
    untrained, evaluated afresh."""
    saved = tmp_path / "metrics.json"
    scalars = {"num_songs": 1.0, "gt_instruments/note_f1/flat": 0.25, "gt_instruments/frame_f1/flat": 0.5}
    saved.write_text(json.dumps({"split": "test", "step": 7, "scalars": scalars}))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_untrained.py"),
                           "--run", str(runs["transcription"]), "--data_dir", str(tiny_tfds_dir), "--split", "test",
                           "--trained_metrics", str(saved)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if "/" in line}
    assert rows["note_f1/flat"][1] == "0.2500" and rows["frame_f1/flat"][1] == "0.5000"
    assert float(rows["note_f1/flat"][0]) < 0.25  # the untrained model's own score, measured here
