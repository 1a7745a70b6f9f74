// The step rows: what each step is, its state said once, when it started (from the
// run's start) and how long it took; a running step's time ticks with the clock.
import { el, fmtDuration, fmtOffset } from "./dom.js";

const MARKS = { pending: "○", running: "◐", done: "✓", failed: "✗", reused: "↺" };

function stateText(step) {
  if (step.status === "reused") return step.reusedFrom ? `reused from attempt ${step.reusedFrom}` : "reused";
  return step.status;
}

/** `now` is the live clock or the replay cursor (ms); `link(seq)` makes a replay-from-here URL. */
export function drawSteps(list, state, now, link) {
  const rows = [];
  for (const step of state.steps.values()) {
    let took = step.duration_ms;
    if (step.status === "running" && step.startedAt !== null) took = Math.max(0, now - step.startedAt);
    const started = step.startedAt !== null && state.firstAt !== null ? fmtOffset(step.startedAt - state.firstAt) : "";
    rows.push(
      el(
        "li",
        { class: `step ${step.status}`, "data-step": step.name, "data-status": step.status },
        el("span", { class: "mark", "aria-hidden": "true", text: MARKS[step.status] || "·" }),
        el("span", { class: "name", text: step.name }),
        el("span", { class: "msg", text: step.message && step.message !== step.name ? step.message : "" }),
        el("span", { class: "state", text: stateText(step) }),
        el("time", { class: "start", title: "started (from the run's start)", text: started }),
        el("span", { class: "dur", text: took === null || took === undefined ? "" : fmtDuration(took) }),
        step.seq ? el("a", { href: link(step.seq), "aria-label": `replay from ${step.name}` }, "replay from here") : el("span"),
      ),
    );
  }
  list.replaceChildren(...rows);
}
