// Line health: the drift monitor's checks on the scans this server scored (GET /v1/monitor), and a
// banner at the top of the page while one of them is in alarm.

import { $, api } from "./common.js";

const CHECK_STATES = { ok: "ok", alarm: "ALARM", waiting: "waiting", off: "off" };

export async function loadMonitor() {
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
