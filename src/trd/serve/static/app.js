"use strict";
// The trd review page. It talks only to /v1/* of the server that served it (relative URLs, no
// other origin, no build step): upload a scan pair or open a recent result, see its images and
// heatmaps, its score against the threshold, explore thresholds over the validation scores, and see
// the drift monitor's checks (a banner while one is in alarm).

const TOKEN_KEY = "trd-token";
const BRANCH_ROLES = { rgb: "colour student", geo: "geometry (3D) student" };
const $ = (id) => document.getElementById(id);

/** An answer of the API that is not a success: the server's one-line message and HTTP status. */
class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

const state = {
  model: null, // GET /v1/model
  record: null, // the result on show
  validation: [], // the model's validation scores
  values: [], // their distinct values, ascending: the slider's positions
  modelIndex: -1, // the position of the model's own threshold (-1: not among them)
  pending: [], // actions that wait for a token
};

// --- formatting -------------------------------------------------------------------------------

/** A score or threshold as the CLI's statements print it (4 decimals). */
const fixed = (x) => (Number.isFinite(x) ? x.toFixed(4) : "n/a");

/** A rate as a percentage with 3 significant digits, like the statements ("9.09 %"). */
const pct = (rate) => `${Number((100 * rate).toPrecision(3))} %`;

/** A time from the recent list: seconds since the epoch or an ISO text, shown in local time. */
function when(t) {
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(date.getTime()) ? String(t ?? "") : date.toLocaleTimeString();
}

/** An element id part from a branch name (stable: letters, digits, - and _ kept). */
const idPart = (name) => String(name).replace(/[^A-Za-z0-9_-]/g, "_");

/** Write ``text`` into element ``id`` and keep the exact number in data-value for readers and tests. */
function setValue(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value === undefined) delete el.dataset.value;
  else el.dataset.value = String(value);
}

// --- the API ----------------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** JSON of ``path`` (relative to the page), or an ApiError carrying the server's message. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authHeaders() });
  } catch (err) {
    throw new ApiError(`cannot reach the server: ${err.message}`, 0);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const fallback = `HTTP ${response.status} ${response.statusText}`;
    let message = body && typeof body.error === "string" ? body.error : fallback;
    const after = response.headers.get("Retry-After");
    if (response.status === 503 && after) message += ` (retry after ${after} s)`;
    throw new ApiError(message.trim(), response.status);
  }
  if (body === null) throw new ApiError(`${path}: the server's answer is not JSON`, response.status);
  return body;
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

/** Run ``action``; show its error as one line, or ask for a token when the API answers 401. */
async function guarded(action) {
  $("error").hidden = true;
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY); // missing or rejected
      state.pending.push(action);
      $("token-form").hidden = false;
      $("token-input").focus();
      showError(`${err.message} (enter the API token below)`);
      return;
    }
    showError(err instanceof ApiError ? err.message : `page error: ${err.message}`);
  }
}

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
  const what = typeof input === "object" ? `${input.modality} (${files.join(", ")} files)` : String(input);
  $("model-info").textContent = `Model ${String(model.sha256 || "").slice(0, 12)} · engine ${model.engine} · ` +
    `branches ${(model.branches || []).join(", ")} · ${size} px · 3D input ${what} · trd ${model.trd_version}`;
  if (files.length > 0) $("xyz-file").accept = files.join(",");
  const rgbFiles = model.input_rgb?.files || [];
  if (rgbFiles.length > 0) $("rgb-file").accept = rgbFiles.join(",");
  if (Array.isArray(input.kinds)) $("xyz-label").textContent = `3D file (${input.kinds.join(", ")})`;
  $("camera-field").hidden = input.camera === false; // camera.json: only for kinds that need it (depth images)
  setupExplorer();
}

// --- one result -------------------------------------------------------------------------------

function figure(id, src, alt, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.id = id;
  img.src = src;
  img.alt = alt;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

function showRecord(record) {
  state.record = record;
  const th = record.threshold || {};
  const threshold = th.image ?? record.image_threshold;
  $("result").hidden = false;
  $("result-name").textContent = record.name;
  setValue("score", fixed(record.score), record.score);
  setValue("image-threshold", fixed(threshold), threshold);
  setValue("decision", record.anomalous ? "anomalous" : "good", record.anomalous);
  $("decision").className = record.anomalous ? "bad" : "ok";
  $("statement").textContent = th.statement || "";
  const list = (obj, unit) => Object.entries(obj || {}).map(([k, v]) => `${k} ${unit(v)}`).join(", ") || "n/a";
  $("result-details").textContent = `Files ${record.rgb} + ${record.xyz}. Score ${fixed(record.score)} is ` +
    `${record.score > threshold ? "above" : "not above"} the threshold ${fixed(threshold)} ` +
    `(anomalous means strictly above). Branch shares: ${list(record.branch_shares, fixed)}. ` +
    `Timings: ${list(record.timings_ms, (v) => `${Math.round(v)} ms`)}.`;
  const images = record.images || {};
  const maps = record.heatmaps || {};
  const figures = [];
  if (images.rgb) figures.push(figure("image-rgb", images.rgb, `RGB image ${record.rgb}`, "RGB image"));
  if (images["3d"]) {
    figures.push(figure("image-3d", images["3d"], `3D input ${record.xyz}, rendered as an image`, "3D image"));
  }
  if (maps.fused) {
    figures.push(figure("heatmap-fused", maps.fused, "Fused anomaly heatmap over the RGB image", "Fused heatmap"));
  }
  const shares = record.branch_shares || {};
  for (const [branch, src] of Object.entries(maps)) {
    if (branch === "fused") continue;
    const role = BRANCH_ROLES[branch] ? ` (${BRANCH_ROLES[branch]})` : "";
    const share = branch in shares ? `, share ${fixed(shares[branch])}` : "";
    figures.push(figure(`heatmap-${idPart(branch)}`, src, `Heatmap of the ${branch} branch over the RGB image`,
      `Branch ${branch}${role}${share}`));
  }
  $("images").replaceChildren(...figures);
  const range = record.heatmap_range;
  $("heatmap-range").textContent = figures.length === 0 ? "This record carries no images." : range
    ? `All heatmaps share one colour scale, blue ${fixed(range.vmin)} to red ${fixed(range.vmax)}.` : "";
  for (const item of document.querySelectorAll("#recent-list button")) {
    item.setAttribute("aria-current", String(item.dataset.id === record.id));
  }
  updateExplorer();
  // Keyboard and screen-reader users land on the result; a phone scrolls to it when it is far down.
  const title = $("result-title");
  title.focus({ preventScroll: true });
  const top = title.getBoundingClientRect().top;
  if (top < 0 || top > 0.6 * window.innerHeight) $("result").scrollIntoView({ block: "start" });
}

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
    showRecord(record);
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
    button.textContent = `${r.name}: ${fixed(r.score)}, ${r.anomalous ? "anomalous" : "good"}, ${when(r.time)}`;
    button.setAttribute("aria-current", String(state.record !== null && state.record.id === r.id));
    const open = async () => showRecord(await api(`v1/recent/${encodeURIComponent(r.id)}`));
    button.addEventListener("click", () => guarded(open));
    const li = document.createElement("li");
    li.append(button);
    return li;
  });
  $("recent-list").replaceChildren(...items);
  $("recent-empty").hidden = items.length > 0;
}

// --- line health: the drift monitor ----------------------------------------------------------

const CHECK_STATES = { ok: "ok", alarm: "ALARM", waiting: "waiting", off: "off" };

async function loadMonitor() {
  const monitor = await api("v1/monitor");
  const alarms = monitor.checks.filter((c) => c.state === "alarm");
  const banner = $("drift-alarm");
  banner.hidden = alarms.length === 0;
  banner.textContent = alarms.length === 0 ? "" : `Drift alarm: ${alarms.map((c) => c.reason).join("; ")}. ` +
    "The scans no longer look like the ones the model was trained and calibrated on: check the line " +
    "(lighting, scanner mounting, lens, parts) before trusting its decisions.";
  $("monitor-summary").textContent = `Checks on the last ${monitor.scans} scans scored by this server ` +
    `(window ${monitor.window}); each raises an alarm at a false-alarm level of ${monitor.alpha} per window.`;
  $("monitor-checks").replaceChildren(...monitor.checks.map((check) => {
    const li = document.createElement("li");
    li.dataset.check = check.name;
    li.dataset.state = check.state;
    li.className = check.state === "alarm" ? "bad" : "";
    li.textContent = `${CHECK_STATES[check.state] || check.state}: ${check.reason}`;
    return li;
  }));
}

// --- threshold explorer -----------------------------------------------------------------------

/** For threshold t: k = 1 + the validation scores strictly above t, and the bound k/(n+1) on the
 * chance that a new good sample scores above t (it exceeds the k-th largest at most that often). */
function boundAt(t) {
  const n = state.validation.length;
  const above = state.validation.filter((s) => s > t).length;
  const k = Math.min(above + 1, n + 1);
  return { n, k, above, bound: k / (n + 1) };
}

/** Index of the value nearest to ``x`` in ascending ``values``. */
function nearest(values, x) {
  let best = 0;
  values.forEach((v, i) => {
    if (Math.abs(v - x) < Math.abs(values[best] - x)) best = i;
  });
  return best;
}

function setupExplorer() {
  const scores = state.model.validation_scores;
  const body = $("explorer-body");
  if (!Array.isArray(scores) || scores.length === 0) {
    $("explorer-note").textContent = "This model carries no validation scores (an older trd wrote it), " +
      "so there are no thresholds to explore. Its threshold's guarantee is what its statement says: " +
      `${(state.model.thresholds?.statements || []).join("; ") || "unknown"}.`;
    body.hidden = true;
    return;
  }
  state.validation = scores.map(Number);
  state.values = [...new Set(state.validation)].sort((a, b) => a - b);
  const slider = $("threshold");
  slider.max = String(state.values.length - 1);
  // The model's threshold is the k-th largest validation score: exactly one of them (models written
  // before trd stored them at full precision rounded them to 6 digits, hence the tolerance).
  const image = Number(state.model.thresholds?.image);
  const i = nearest(state.values, image);
  state.modelIndex = Math.abs(state.values[i] - image) <= 1e-5 * Math.abs(image) ? i : -1;
  slider.value = String(i);
  $("explorer-note").textContent = `${scores.length} validation scores are stored with the model.`;
  const strip = $("strip");
  strip.querySelectorAll(".tick").forEach((tick) => tick.remove());
  state.values.forEach((v, i) => {
    const tick = document.createElement("div");
    tick.className = "tick";
    tick.dataset.value = String(v);
    tick.style.left = rankPosition(i);
    strip.prepend(tick);
  });
  $("strip-min").textContent = fixed(state.values[0]);
  $("strip-max").textContent = fixed(state.values[state.values.length - 1]);
  body.hidden = false;
  updateExplorer();
}

/** Where slider position ``i`` (the i-th smallest distinct validation score) sits, in percent. */
function rankPosition(i) {
  const last = state.values.length - 1;
  return `${last > 0 ? (100 * i) / last : 50}%`;
}

/** Where score ``x`` sits among the validation scores on the strip (interpolated between them). */
function scorePosition(x) {
  const v = state.values;
  const i = v.findIndex((value) => value >= x);
  if (i === -1) return rankPosition(v.length - 1);
  if (i === 0) return rankPosition(0);
  return rankPosition(i - 1 + (x - v[i - 1]) / (v[i] - v[i - 1]));
}

function updateExplorer() {
  if (state.values.length === 0) return;
  const slider = $("threshold");
  const position = Number(slider.value);
  const atModel = position === state.modelIndex;
  const model = state.model.thresholds || {};
  const { n, k, above, bound } = boundAt(state.values[position]);
  const t = atModel ? model.image : state.values[position]; // the exact threshold where the model has one
  setValue("threshold-value", fixed(t), t);
  setValue("threshold-rank", `k = ${k} of n = ${n} (${above} above it)`, k);
  setValue("fpr-bound", `≤ ${k}/${n + 1} = ${pct(bound)}`, bound);
  slider.setAttribute("aria-valuetext", `threshold ${fixed(t)}, false-positive bound ${pct(bound)}`);
  $("threshold-model").textContent = `The model's own threshold: ${(model.statements || [])[0] || fixed(model.image)}` +
    (atModel ? " (the slider is there now)." : ".");
  const record = state.record;
  const score = record ? record.score : null;
  for (const tick of $("strip").querySelectorAll(".tick")) {
    tick.classList.toggle("above", Number(tick.dataset.value) > state.values[position]);
  }
  $("strip-threshold").style.left = rankPosition(position);
  $("strip-score").hidden = score === null;
  if (score === null) {
    $("threshold-sample").textContent = "Score a scan or open a recent result to see where it falls.";
    return;
  }
  $("strip-score").style.left = scorePosition(score);
  const below = state.validation.filter((s) => s < score).length;
  const decision = score > t ? "anomalous" : "good";
  const sample = $("threshold-sample");
  sample.textContent = `This sample (${record.name}, score ${fixed(score)}) is above ${below} of the ${n} validation ` +
    `scores; at this threshold it would be `;
  const strong = document.createElement("strong");
  strong.id = "explorer-decision";
  strong.textContent = decision;
  strong.className = decision === "anomalous" ? "bad" : "ok";
  sample.append(strong, ` (at the model's threshold: ${record.anomalous ? "anomalous" : "good"}).`);
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

// --- start ------------------------------------------------------------------------------------

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
  $("threshold").addEventListener("input", updateExplorer);
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
