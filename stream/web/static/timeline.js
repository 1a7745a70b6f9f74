// The waterfall: one lane per attempt, each step a bar on one time axis, the
// running step growing with the clock. Between lanes, the time no worker held the
// run (queued, a killed worker's lease running out, a back-off before a retry) is
// drawn as a gap and says why. Steps a later attempt reused (durable results) are
// marked. A replay moves the cursor: everything is drawn up to `now`, which the
// page passes in (the wall clock live, the last replayed event's time in a replay).
import { el, fmtDuration } from "./dom.js";

const MIN_SPAN_MS = 1000;

function pct(value, from, span) {
  return `${Math.min(100, Math.max(0, ((value - from) / span) * 100)).toFixed(3)}%`;
}

function share(ms, span) {
  return `${Math.min(100, Math.max(0, (ms / span) * 100)).toFixed(3)}%`;
}

function place(node, left, width) {
  node.style.left = left;
  node.style.width = width;
  return node;
}

function axis(from, span) {
  const ticks = [];
  for (let i = 0; i <= 4; i++) {
    const at = from + (span * i) / 4;
    const tick = el("span", { class: "tick", text: fmtDuration(at - from) });
    tick.style.left = `${i * 25}%`;
    ticks.push(tick);
  }
  return el("div", { class: "axis", "aria-hidden": "true" }, ...ticks);
}

const ROW_PX = 22; // one row per bar: a waterfall, so no two labels ever overlap

function barNode(bar, row, laneEnd, live, now, from, span) {
  const open = bar.endAt === null;
  const end = open ? (live ? now : laneEnd) : bar.endAt;
  const status = open ? (live ? "running" : "lost") : bar.status;
  const duration = fmtDuration(Math.max(0, end - bar.startAt));
  const label = status === "reused" ? `${bar.name} ↺ reused` : `${bar.name} ${duration}`;
  const node = el(
    "div",
    {
      class: `bar ${status}`,
      role: "listitem",
      "data-step": bar.name,
      "data-status": status,
      title: `${bar.name}: ${status}, ${duration}`,
    },
    el("span", { class: "label", text: label }),
  );
  const width = Math.max(0, end - bar.startAt);
  const startShare = (bar.startAt - from) / span;
  const endShare = (end - from) / span;
  // The label sits right of the bar; inside a wide bar that reaches the right edge; left of a late one.
  if (endShare > 0.7) node.classList.add(startShare < 0.35 ? "wide" : "late");
  node.style.top = `${row * ROW_PX + 4}px`;
  return place(node, pct(bar.startAt, from, span), `max(3px, ${share(width, span)})`);
}

/**
 * Draw `state`'s lanes into `root`. `now` (ms) is where time stops: the live clock or the
 * replay cursor; `live` says whether an open bar is still running or was lost with its worker;
 * `until` (ms) fixes the axis's end (a replay draws on the finished run's axis).
 */
export function drawTimeline(root, state, now, { live, cursor, until = null }) {
  const lanes = [...state.lanes.values()].filter((lane) => lane.startAt !== null);
  if (!lanes.length || state.firstAt === null) {
    root.replaceChildren(el("p", { class: "muted", text: state.firstAt === null ? "No events yet." : state.finishedAt !== null ? "No worker ran it." : "Waiting for a worker…" }));
    return;
  }
  const from = state.firstAt;
  const finished = state.finishedAt !== null;
  const end = finished ? state.finishedAt : Math.max(now, state.lastAt ?? from);
  const span = Math.max(MIN_SPAN_MS, (until ?? end) - from); // a replay keeps the whole run's axis
  const last = lanes[lanes.length - 1];
  const rows = lanes.map((lane) => {
    const isCurrent = lane === last && live && !finished;
    const laneEnd = isCurrent ? end : lane.endAt;
    const parts = [];
    if (lane.gap && lane.gap.toAt > lane.gap.fromAt) {
      const gapText = `${lane.gap.reason} ${fmtDuration(lane.gap.toAt - lane.gap.fromAt)}`;
      const gap = el("div", { class: `gap${lane.gap.reason === "queued" ? " queued" : ""}`, title: gapText }, el("span", { class: "label", text: gapText }));
      parts.push(place(gap, pct(lane.gap.fromAt, from, span), share(lane.gap.toAt - lane.gap.fromAt, span)));
    }
    const extent = el("div", { class: "extent" });
    parts.push(place(extent, pct(lane.startAt, from, span), share(laneEnd - lane.startAt, span)));
    lane.bars.forEach((bar, row) => parts.push(barNode(bar, row, lane.endAt, isCurrent, end, from, span)));
    if (cursor) {
      const mark = el("div", { class: "cursor", "aria-hidden": "true" });
      mark.style.left = pct(now, from, span);
      parts.push(mark);
    }
    const track = el("div", { class: "track", role: "list", "aria-label": `attempt ${lane.n} steps` }, ...parts);
    track.style.height = `${Math.max(1, lane.bars.length) * ROW_PX + 8}px`;
    return el(
      "div",
      { class: "lane", "data-attempt": lane.n },
      el("span", { class: "lane-name", text: `attempt ${lane.n}` }),
      track,
    );
  });
  root.replaceChildren(el("div", { class: "lane axis-row" }, el("span", { class: "lane-name" }), axis(from, span)), ...rows);
  root.dataset.lanes = String(rows.length);
}
