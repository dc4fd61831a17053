// jointist-app page: upload a song, follow its job, show the piano rolls, stems and downloads.
"use strict";

const $ = (id) => document.getElementById(id);
let config = null;
let polling = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("progress-box").hidden = true;
  $("submit").disabled = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function readJson(response) {
  try {
    return await response.json();
  } catch (e) {
    return {error: `the server answered ${response.status} ${response.statusText}`};
  }
}

async function loadConfig() {
  const response = await fetch("/api/config");
  config = await readJson(response);
  const list = $("instrument-list");
  config.instruments.forEach((name) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.className = "instrument";
    label.append(box, " " + name);
    list.append(label);
  });
  $("auto").disabled = !config.auto;
  $("auto").checked = config.auto;
  if (!config.auto) {
    $("auto-label").title = "start jointist-app with --ir_checkpoint to enable";
  }
  $("onset_threshold").placeholder = config.default_threshold;
  $("frame_threshold").placeholder = config.default_threshold;
}

function chosenInstruments() {
  if ($("auto").checked) return "auto";
  return Array.from(document.querySelectorAll("input.instrument:checked")).map((b) => b.value).join(",");
}

function setFile(file) {
  const transfer = new DataTransfer();
  transfer.items.add(file);
  $("file").files = transfer.files;
  $("drop-text").textContent = `${file.name} (${(file.size / 1048576).toFixed(1)} MB)`;
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const file = $("file").files[0];
  if (!file) return showError("choose an audio file first (wav, flac, ogg or mp3)");
  if (config && file.size > config.max_upload_mb * 1048576) {
    return showError(`the file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${config.max_upload_mb} MB`);
  }
  const form = new FormData();
  form.append("audio", file);
  form.append("instruments", chosenInstruments());
  form.append("onset_threshold", $("onset_threshold").value);
  form.append("frame_threshold", $("frame_threshold").value);
  $("submit").disabled = true;
  $("results").hidden = true;
  $("progress-box").hidden = false;
  $("progress").removeAttribute("value");
  $("progress-text").textContent = "uploading";
  let response;
  try {
    response = await fetch("/api/jobs", {method: "POST", body: form});
  } catch (e) {
    return showError(`the upload failed: ${e.message}`);
  }
  const job = await readJson(response);
  if (!response.ok) return showError(job.error);
  follow(job.id);
}

function follow(jobId) {
  clearInterval(polling);
  polling = setInterval(async () => {
    let job;
    try {
      const response = await fetch(`/api/jobs/${jobId}`);
      job = await readJson(response);
      if (!response.ok) throw new Error(job.error);
    } catch (e) {
      clearInterval(polling);
      return showError(`lost track of the song: ${e.message}`);
    }
    showProgress(job);
    if (job.state === "done") {
      clearInterval(polling);
      showResult(job);
    } else if (job.state === "failed") {
      clearInterval(polling);
      showError(job.error);
    }
  }, 400);
}

function showProgress(job) {
  const bar = $("progress");
  let text = job.stage;
  if (job.state === "queued") {
    text = `waiting in the queue (position ${job.queue_position})`;
    bar.removeAttribute("value");
  } else if (job.total_windows > 0) {
    bar.max = job.total_windows;
    bar.value = job.done_windows;
    text += `: window ${job.done_windows} of ${job.total_windows}`;
  }
  $("progress-text").textContent = text;
}

function showResult(job) {
  const result = job.result;
  const url = (path) => `/api/jobs/${job.id}/files/${path}`;
  $("progress-box").hidden = true;
  $("submit").disabled = false;
  $("song-title").textContent = `${result.song} (${result.duration_seconds.toFixed(1)} s)` +
    (result.detected_none ? ": the recognizer heard no instrument, so all of them are shown" : "");
  $("midi-link").href = url(result.files.midi);
  $("notes-link").href = url(result.files.notes);
  $("zip-link").href = url(result.files.zip);
  $("mix").src = url(result.files.mix);
  const tracks = $("tracks");
  tracks.replaceChildren();
  result.instruments.forEach((inst) => {
    const track = document.createElement("div");
    track.className = "track";
    track.dataset.instrument = inst.name;
    const title = document.createElement("h3");
    title.textContent = `${inst.name}: ${inst.notes} notes`;
    const roll = document.createElement("img");
    roll.className = "pianoroll";
    roll.alt = `piano roll of ${inst.name}`;
    roll.src = url(inst.pianoroll);
    track.append(title, roll);
    if (inst.stem) {
      const player = document.createElement("audio");
      player.controls = true;
      player.preload = "auto";
      player.className = "stem";
      player.src = url(inst.stem);
      track.append(player);
    }
    tracks.append(track);
  });
  $("results").hidden = false;
}

function setUpDrop() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => {
    if ($("file").files.length) setFile($("file").files[0]);
  });
}

setUpDrop();
$("song-form").addEventListener("submit", submit);
loadConfig().catch((e) => showError(`cannot reach the server: ${e.message}`));
