// What every part of the review page shares: the page state, the API, errors and number formats.
// Plain ES modules served as they are (no build step), talking only to /v1/* of this server.

export const TOKEN_KEY = "trd-token";
export const $ = (id) => document.getElementById(id);

/** The page state: one object, changed only by the functions that own each part. */
export const state = {
  model: null, // GET /v1/model
  record: null, // the result on show
  validation: [], // the model's validation scores
  values: [], // their distinct values, ascending: the slider's positions
  modelIndex: -1, // the position of the model's own threshold (-1: not among them)
  threshold: null, // the explorer's threshold: a slider position's score or a typed value
  pending: [], // actions that wait for a token
};

/** An answer of the API that is not a success: the server's one-line message and HTTP status. */
export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// --- formatting -------------------------------------------------------------------------------

/** A score or threshold as the CLI's statements print it (4 decimals). */
export const fixed = (x) => (Number.isFinite(x) ? x.toFixed(4) : "n/a");

/** A rate as a percentage with 3 significant digits, like the statements ("9.09 %"). */
export const pct = (rate) => `${Number((100 * rate).toPrecision(3))} %`;

/** A length or area with 2-3 significant digits ("3.2", "0.41"). */
export const short = (x, digits = 3) => (Number.isFinite(x) ? String(Number(x.toPrecision(digits))) : "n/a");

/** A time from the recent list: seconds since the epoch or an ISO text, shown in local time. */
export function when(t) {
  const date = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(date.getTime()) ? String(t ?? "") : date.toLocaleTimeString();
}

/** An element id part from a name (stable: letters, digits, - and _ kept). */
export const idPart = (name) => String(name).replace(/[^A-Za-z0-9_-]/g, "_");

/** Write ``text`` into element ``id`` and keep the exact number in data-value for readers and tests. */
export function setValue(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value === undefined) delete el.dataset.value;
  else el.dataset.value = String(value);
}

/** A new element with a class and text (or children). */
export function make(tag, className, ...children) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  el.append(...children);
  return el;
}

// --- the API ----------------------------------------------------------------------------------

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** JSON of ``path`` (relative to the page), or an ApiError carrying the server's message. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
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

/** POST ``body`` as JSON to ``path``. */
export const postJson = (path, body) =>
  api(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });

export function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

/** Run ``action``; show its error as one line, or ask for a token when the API answers 401. */
export async function guarded(action) {
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
