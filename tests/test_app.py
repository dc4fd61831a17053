"""`jointist-app` in a real browser: headless Debian Chromium driven by playwright (no browser
download), against the app started as its own process on 127.0.0.1 with the tiny freshly
initialised joint and ir runs of test_transcribe.py, on a rendered song of the tiny dataset."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pretty_midi
import pytest
import soundfile
from launch_helpers import ROOT
from scripts import processes
from test_transcribe import runs  # noqa: F401  (the fixture)

from jointist_jax.inference import audio_io, cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def app_url(runs):  # noqa: F811
    """The app serving the joint run (with the ir run for "auto"), stopped at the end."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "jointist_jax.app.cli", "--checkpoint", str(runs["joint"]),
                             "--ir_checkpoint", str(runs["ir"]), "--port", "0", "--batch_windows", "1",
                             "--max_upload_mb", str(MAX_UPLOAD_MB)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "jointist-app: serving on http://127.0.0.1:PORT/" once the runs are loaded
        assert "serving on http://127.0.0.1:" in line, proc.stderr.read()[-3000:] if proc.poll() is not None else line
        yield line.split("serving on ")[1].strip()
        assert proc.poll() is None, "the server died"
    finally:
        processes.stop(proc, timeout=30)


def _post(url: str, fields: dict, file_name: str, content: bytes) -> tuple[int, dict]:
    """A multipart POST from Python (as the page's FormData does)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "api/jobs", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for_job(url: str, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}api/jobs/{job_id}", timeout=30) as response:
            job = json.loads(response.read())
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


@pytest.mark.slow
def test_song_to_midi_and_stems_in_the_browser(app_url, runs, tiny_slakh_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    song = sorted(tiny_slakh_dir.glob("test/*/mix.flac"))[0]
    duration = audio_io.load_audio(song).shape[0] / 16000
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF this is not a wave file" * 40)
    screenshot = tmp_path / "app.png"
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
                                                       viewport={"width": 1100, "height": 900})
        try:
            page = context.new_page()
            page.goto(app_url)
            page.wait_for_selector("input.instrument >> nth=38")
            assert page.is_checked("#auto")  # the ir run makes "auto" the default
            page.uncheck("#auto")
            for name in ("Piano", "Bass", "Drums"):
                page.check(f"input.instrument[value='{name}']")
            page.set_input_files("#file", str(song))
            page.click("#submit")
            # The progress bar names the stage and counts the windows while the model works.
            page.wait_for_function("document.getElementById('progress-text').textContent"
                                   ".includes('transcribing and separating: window')", timeout=120_000)
            page.wait_for_selector("#results:not([hidden])", timeout=300_000)

            assert page.locator("#tracks .track h3").all_inner_texts()[0].startswith("Piano: ")
            assert [t.split(":")[0] for t in page.locator("#tracks .track h3").all_inner_texts()] == [
                "Piano", "Bass", "Drums"]
            page.wait_for_function("Array.from(document.images).length === 3 && "
                                   "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)",
                                   timeout=60_000)
            durations = page.eval_on_selector_all("audio", "players => players.map(a => a.duration)")
            assert len(durations) == 4  # the mix and three stems
            np.testing.assert_allclose(durations, duration, atol=1e-3)
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"\nscreenshot of jointist-app: {screenshot}")

            with page.expect_download() as download:
                page.click("#midi-link")
            midi_path = tmp_path / "page.mid"
            download.value.save_as(midi_path)
            with page.expect_download() as download:
                page.click("#zip-link")
            assert download.value.suggested_filename.endswith(".zip")

            # A corrupt file: the page says what is wrong, in words.
            page.set_input_files("#file", str(broken))
            page.click("#submit")
            page.wait_for_selector("#error:not([hidden])", timeout=60_000)
            error = page.inner_text("#error")
            assert error.startswith("'broken.wav': cannot decode audio") and "Traceback" not in error
        finally:
            context.close()

    midi = pretty_midi.PrettyMIDI(str(midi_path))
    assert [(i.name, i.program, i.is_drum) for i in midi.instruments] == [
        ("Piano", 0, False), ("Bass", 38, False), ("Drums", 0, True)]
    # The CLI gives the same MIDI file for the same song.
    code = cli.main(["--checkpoint", str(runs["joint"]), "--audio", str(song), "--instruments", "piano,bass,drums",
                     "--separate", "--batch_windows", "1", "--out", str(tmp_path / "cli"), "--quiet"])
    assert code == 0
    assert (tmp_path / "cli" / "mix" / "mix.mid").read_bytes() == midi_path.read_bytes()


@pytest.mark.slow
def test_refusals_in_words_and_queued_requests(app_url, tiny_slakh_dir, tmp_path):
    song = sorted(tiny_slakh_dir.glob("test/*/mix.flac"))[0].read_bytes()
    status, answer = _post(app_url, {"instruments": "piano,banjoo"}, "song.flac", song)
    assert status == 400 and "banjoo" in answer["error"] and "Electric Guitar" in answer["error"]
    status, answer = _post(app_url, {"instruments": "piano"}, "big.wav", b"\0" * (MAX_UPLOAD_MB * 2 << 20))
    assert status == 413 and "the limit is 1 MB" in answer["error"]
    status, answer = _post(app_url, {"instruments": "piano"}, "song.aiff", song)
    assert status == 400 and "unsupported audio format '.aiff'" in answer["error"]
    status, answer = _post(app_url, {"instruments": "piano", "onset_threshold": "2"}, "song.flac", song)
    assert status == 400 and answer["error"].startswith("onset_threshold must")

    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, np.float32), 16000)
    # Three requests at once (as from three tabs): queued in order, each answered.
    submitted = [_post(app_url, {"instruments": "drums"}, "first.flac", song),
                 _post(app_url, {"instruments": "drums"}, "quiet.wav", silent.read_bytes()),
                 _post(app_url, {"instruments": "auto"}, "third.flac", song)]
    assert [s for s, _ in submitted] == [202, 202, 202]
    assert submitted[2][1]["state"] == "queued" and submitted[2][1]["queue_position"] >= 1
    first, quiet, third = (_wait_for_job(app_url, answer["id"]) for _, answer in submitted)
    assert first["state"] == "done" and [i["name"] for i in first["result"]["instruments"]] == ["Drums"]
    assert quiet["state"] == "failed" and quiet["error"].startswith("'quiet.wav': the audio is silent")
    assert third["state"] == "done" and third["result"]["instruments"]
