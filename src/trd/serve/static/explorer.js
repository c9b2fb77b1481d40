// The threshold explorer: slide over the model's validation scores or type any threshold, see what
// it promises (on average, and for this one threshold with 90 % confidence) and what it would decide
// for the scan on show, and write a NEW model file with it (POST /v1/threshold; the served model is
// never changed).

import { $, fixed, guarded, make, pct, postJson, setValue, short, state } from "./common.js";

/** For threshold t: how many validation scores lie above it, its rank k = that + 1, the average
 * false-positive bound k/(n+1) and the bound this threshold keeps with 90 % confidence. k > n: a
 * threshold below every validation score promises nothing. */
export function boundAt(t) {
  const n = state.validation.length;
  const above = state.validation.filter((s) => s > t).length;
  const k = above + 1;
  const table = state.model?.fpr_bound_90_by_rank || [];
  return { n, k, above, bound: Math.min(k / (n + 1), 1), bound90: k <= n ? table[k - 1] : 1 };
}

/** Index of the value nearest to ``x`` in ascending ``values``. */
function nearest(values, x) {
  let best = 0;
  values.forEach((v, i) => {
    if (Math.abs(v - x) < Math.abs(values[best] - x)) best = i;
  });
  return best;
}

/** Where slider position ``i`` (the i-th smallest distinct validation score) sits, in percent. */
function rankPosition(i) {
  const last = state.values.length - 1;
  return `${last > 0 ? (100 * i) / last : 50}%`;
}

/** Where value ``x`` sits among the validation scores on the strip (interpolated; at an end beyond them). */
function scorePosition(x) {
  const v = state.values;
  const i = v.findIndex((value) => value >= x);
  if (i === -1) return rankPosition(v.length - 1);
  if (i === 0) return rankPosition(0);
  return rankPosition(i - 1 + (x - v[i - 1]) / (v[i] - v[i - 1]));
}

export function setupExplorer() {
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
  state.threshold = image;
  $("threshold-typed").value = short(image, 6); // shown rounded; the exact value stays in state.threshold
  $("explorer-note").textContent = `${scores.length} validation scores (good samples the model had not seen) are ` +
    "stored with the model.";
  const strip = $("strip");
  strip.querySelectorAll(".tick").forEach((tick) => tick.remove());
  state.values.forEach((v, j) => {
    const tick = make("div", "tick");
    tick.dataset.value = String(v);
    tick.style.left = rankPosition(j);
    strip.prepend(tick);
  });
  $("strip-min").textContent = fixed(state.values[0]);
  $("strip-max").textContent = fixed(state.values[state.values.length - 1]);
  body.hidden = false;
  updateExplorer();
}

/** The slider moved: its position's validation score (the model's exact threshold at its own place). */
function slid() {
  const position = Number($("threshold").value);
  state.threshold = position === state.modelIndex ? Number(state.model.thresholds.image) : state.values[position];
  $("threshold-typed").value = short(state.threshold, 6);
  updateExplorer();
}

/** A value was typed (any number, also beyond the validation scores): the slider follows to the nearest. */
function typed() {
  const value = Number($("threshold-typed").value);
  if ($("threshold-typed").value.trim() === "" || !Number.isFinite(value)) return;
  state.threshold = value;
  $("threshold").value = String(nearest(state.values, value));
  updateExplorer();
}

export function updateExplorer() {
  if (state.values.length === 0 || state.threshold === null) return;
  const t = state.threshold;
  const model = state.model.thresholds || {};
  const atModel = t === Number(model.image);
  const { n, k, above, bound, bound90 } = boundAt(t);
  setValue("threshold-value", fixed(t), t);
  setValue("threshold-rank", `${above} of ${n} above it (k = ${k} of n = ${n})`, k);
  const promise = k > n ? "no promise: every validation score is above it" : `≤ ${pct(bound)} on average`;
  setValue("fpr-bound", `${promise} (k/(n+1) = ${k}/${n + 1})`, bound);
  setValue("fpr-bound-90", k > n ? "none" : `≤ ${pct(bound90)}`, bound90);
  $("apply-threshold").disabled = k > n;
  $("threshold").setAttribute("aria-valuetext", `threshold ${fixed(t)}, false-alarm bound ${pct(bound)}`);
  $("threshold-model").textContent = `The model's own threshold: ${(model.statements || [])[0] || fixed(model.image)}` +
    (atModel ? " (shown now)." : ".");
  for (const tick of $("strip").querySelectorAll(".tick")) {
    tick.classList.toggle("above", Number(tick.dataset.value) > t);
  }
  $("strip-threshold").style.left = scorePosition(t);
  const record = state.record;
  const score = record ? record.score : null;
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
    "scores; by its score alone (before any reject rules), at this threshold it would be ";
  const strong = make("strong", decision === "anomalous" ? "bad" : "ok", decision);
  strong.id = "explorer-decision";
  // the same condition for the model's own threshold; the reject rules may then narrow it to good
  const ownAbove = record.score_above_threshold ?? record.anomalous; // trd.record/1: the score's decision only
  const own = ownAbove ? "anomalous" : "good";
  const narrowed = ownAbove && !record.anomalous ? ", and good after its reject rules" : "";
  sample.append(strong, ` (at the model's threshold: ${own}${narrowed}).`);
}

/** Write a new model file with the explorer's threshold and show it with its statement. */
async function applyThreshold() {
  const button = $("apply-threshold");
  button.disabled = true;
  $("threshold-written").textContent = "Writing a new model file…";
  try {
    const answer = await postJson("v1/threshold", { image: state.threshold });
    const statements = answer.thresholds.statements || [];
    const out = $("threshold-written");
    out.replaceChildren(make("strong", "", `Wrote ${answer.file}`), ` in ${answer.folder}. `,
      make("span", "", statements[0] || ""), ". ",
      `The service still scores with ${answer.served}; to use the new file, serve it instead ` +
      `(trd serve --model ${answer.file}).`);
    out.querySelector("span").id = "written-statement";
    out.dataset.file = answer.file;
  } catch (err) {
    $("threshold-written").textContent = "";
    throw err;
  } finally {
    button.disabled = false;
  }
}

export function initExplorer() {
  $("threshold").addEventListener("input", slid);
  $("threshold-typed").addEventListener("input", typed);
  $("threshold-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(applyThreshold);
  });
}
