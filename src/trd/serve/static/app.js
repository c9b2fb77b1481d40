// The trd review page. It talks only to /v1/* of the server that served it (relative URLs, no
// other origin, no build step): upload a scan pair or open a recent result, see its images, heatmaps
// and defect regions (result.js), its score against the threshold, explore thresholds (explorer.js),
// label it (review.js), and see the drift monitor's checks, with a banner while one is in alarm (monitor.js).

import { $, api, fixed, guarded, showError, state, TOKEN_KEY, when } from "./common.js";
import { initExplorer, setupExplorer, updateExplorer } from "./explorer.js";
import { loadMonitor } from "./monitor.js";
import { showRecord } from "./result.js";
import { initReview, labelText, reviewRecord } from "./review.js";

/** Show a result, then what depends on it: the explorer's marks and its review. */
const show = (record) => showRecord(record, () => {
  updateExplorer();
  reviewRecord(record);
});

function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  $("token-form").hidden = true;
  state.pending.splice(0).forEach(guarded);
}

// --- the model --------------------------------------------------------------------------------

async function loadModel() {
  const model = await api("v1/model");
  state.model = model;
  const size = Array.isArray(model.image_size) ? model.image_size.join("x") : model.image_size;
  const input = model.input_3d || {};
  const files = Array.isArray(input.files) ? input.files : [];
  const kinds = Array.isArray(input.kinds) ? input.kinds.join(" or ") : "3D";
  const what = typeof input === "object" ? `${kinds} files (${files.join(", ")}), seen as ${input.modality === "depth" ?
    "depth" : "surface directions"}` : String(input);
  $("model-info").textContent = `Model ${String(model.sha256 || "").slice(0, 12)} · engine ${model.engine} · ` +
    `${size} px · 3D input: ${what} · trd ${model.trd_version}`;
  if (files.length > 0) $("xyz-file").accept = files.join(",");
  const rgbFiles = model.input_rgb?.files || [];
  if (rgbFiles.length > 0) $("rgb-file").accept = rgbFiles.join(",");
  if (Array.isArray(input.kinds)) $("xyz-label").textContent = `3D file (${input.kinds.join(", ")})`;
  // camera.json: only for kinds that need it (depth images); optional where the model keeps its training camera
  $("camera-field").hidden = input.camera === "none" || input.camera === false;
  $("camera-label").textContent = input.camera === "required"
    ? "camera.json (needed for depth PNGs: this model keeps no camera)"
    : "camera.json (optional: without it, depth PNGs use the camera the model was trained with)";
  setupExplorer();
}

// --- scoring ---------------------------------------------------------------------------------

async function scoreUpload() {
  const form = new FormData();
  for (const part of ["rgb", "xyz", "camera"]) {
    const file = $(`${part}-file`).files[0];
    if (file) form.append(part, file, file.name);
  }
  const button = $("score-button");
  button.disabled = true;
  $("upload-status").textContent = "Scoring…";
  try {
    const record = await api("v1/score?heatmaps=true", { method: "POST", body: form });
    $("upload-status").textContent = `Scored ${record.name}.`;
    show(record);
    await loadRecent();
    await loadMonitor();
  } catch (err) {
    $("upload-status").textContent = "";
    throw err;
  } finally {
    button.disabled = false;
  }
}

// --- recent results ---------------------------------------------------------------------------

async function loadRecent() {
  const { results } = await api("v1/recent");
  const items = results.map((r) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = r.id;
    const reviewed = r.label ? `, ${labelText(r.label, r.defect_type, r.anomalous)}` : "";
    button.textContent = `${r.name}: ${fixed(r.score)}, ${r.anomalous ? "anomalous" : "good"}${reviewed}, ${when(r.time)}`;
    button.setAttribute("aria-current", String(state.record !== null && String(state.record.id) === String(r.id)));
    const open = async () => show(await api(`v1/recent/${encodeURIComponent(r.id)}`));
    button.addEventListener("click", () => guarded(open));
    const li = document.createElement("li");
    li.append(button);
    return li;
  });
  $("recent-list").replaceChildren(...items);
  $("recent-empty").hidden = items.length > 0;
}

// --- files: inputs and drag-and-drop -----------------------------------------------------------

/** Put ``file`` into the file input ``id`` (as if chosen there). */
function setFile(id, file) {
  const transfer = new DataTransfer();
  if (file) transfer.items.add(file);
  $(id).files = transfer.files;
}

/** Which of two dropped files is the 3D one: a file only the 3D input accepts (a TIFF beside a PNG),
 * else the name says so. */
function pickXyz(a, b) {
  const suffix = (f) => (f.name.match(/\.[^.]+$/) || [""])[0].toLowerCase();
  const only3d = (f) => (state.model?.input_3d?.files || []).includes(suffix(f)) &&
    !(state.model?.input_rgb?.files || []).includes(suffix(f));
  const says3d = (f) => /(xyz|depth|normal|cloud|3d)/i.test(f.name);
  const saysRgb = (f) => /(rgb|colou?r)/i.test(f.name);
  for (const test of [only3d, says3d, (f) => !saysRgb(f)]) {
    if (test(a) !== test(b)) return test(a) ? a : b;
  }
  return null;
}

function dropFiles(event) {
  event.preventDefault();
  $("drop-zone").classList.remove("over");
  const files = [...(event.dataTransfer?.files || [])];
  const camera = files.find((f) => /\.json$/i.test(f.name));
  const images = files.filter((f) => f !== camera);
  if (images.length !== 2) {
    showError(`drop two files, the RGB image and its 3D file (and camera.json for depth PNGs); got ${files.length}`);
    return;
  }
  const xyz = pickXyz(images[0], images[1]);
  if (xyz === null) {
    showError(`cannot tell which of ${images[0].name} and ${images[1].name} is the 3D file: choose them below`);
    return;
  }
  setFile("rgb-file", images.find((f) => f !== xyz));
  setFile("xyz-file", xyz);
  setFile("camera-file", camera);
  $("upload-form").requestSubmit();
}

// --- start ---------------------------------------------------------------------------------

function init() {
  $("token-form").addEventListener("submit", useToken);
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(scoreUpload);
  });
  $("recent-refresh").addEventListener("click", () => guarded(async () => {
    await loadRecent();
    await loadMonitor();
  }));
  initExplorer();
  initReview(loadRecent);
  const zone = $("drop-zone");
  zone.addEventListener("dragenter", () => zone.classList.add("over"));
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  // Anywhere on the page: a dropped file is taken as input, never opened by the browser instead.
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", dropFiles);
  guarded(loadModel);
  guarded(loadRecent);
  guarded(loadMonitor);
}

init();
