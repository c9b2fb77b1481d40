// The review panel: an operator labels the result on show ("false alarm", "confirmed good" or
// "confirmed defect" with its type), with their name; labels are kept in the result store with who
// and when (GET/POST /v1/results/{id}/labels), and the last one can be taken back (undo).

import { $, api, ApiError, guarded, postJson, setValue, state, when } from "./common.js";

const REVIEWER_KEY = "trd-reviewer"; // the reviewer's name, remembered by this browser

/** What a label says, e.g. "false alarm" or "confirmed defect (scratch)". */
export function labelText(label, defectType, anomalous) {
  if (label === "good") return anomalous ? "false alarm" : "confirmed good";
  if (label === "defect") return `confirmed defect (${defectType})`;
  return "not labelled";
}

/** Show a review answer, or "loading" for null. */
function showReview(review) {
  const record = state.record;
  if (review === null) {
    $("review-state").textContent = "Loading the review…";
    $("review-history").replaceChildren();
    return;
  }
  const text = labelText(review.label, review.defect_type, record.anomalous);
  setValue("review-state", review.label ? `Labelled ${text} by ${review.by} at ${when(review.at)}.` : "Not labelled.",
    review.label ?? "");
  $("label-undo").disabled = !review.label;
  $("review-history").replaceChildren(...review.history.map((e) => {
    const li = document.createElement("li");
    li.textContent = e.action === "undo" ? `${e.by} took back a label (${when(e.at)})`
      : `${e.by}: ${labelText(e.label, e.defect_type, record.anomalous)} (${when(e.at)})`;
    return li;
  }));
}

async function loadReview() {
  showReview(await api(`v1/results/${encodeURIComponent(state.record.id)}/labels`));
}

/** The review of the record now on show (called after each result is shown). */
export function reviewRecord(record) {
  $("label-good").textContent = record.anomalous ? "False alarm" : "Confirmed good";
  showReview(null);
  guarded(loadReview);
}

/** POST a label (or an undo) for the result on show, as the named reviewer; then ``after()``. */
async function review(path, body, after) {
  const by = $("reviewer").value.trim();
  if (!by) {
    $("reviewer").focus();
    throw new ApiError("enter your name first: it is kept with the label", 0);
  }
  localStorage.setItem(REVIEWER_KEY, by);
  const answer = await postJson(`v1/results/${encodeURIComponent(state.record.id)}/labels${path}`, { ...body, by });
  showReview(answer);
  await after();
}

/** Wire the panel's buttons; ``after`` runs once a label is stored (the recent list reloads). */
export function initReview(after) {
  $("reviewer").value = localStorage.getItem(REVIEWER_KEY) || "";
  $("label-good").addEventListener("click", () => guarded(() => review("", { label: "good" }, after)));
  $("label-defect").addEventListener("click", () => guarded(() => review("", {
    label: "defect", defect_type: $("defect-type").value.trim(),
  }, after)));
  $("label-undo").addEventListener("click", () => guarded(() => review("/undo", {}, after)));
}
