// A small bar chart of the last runs' durations (newest on the right), coloured by
// status: a slow or failing streak shows at a glance where a table would not.
// SVG built through the DOM (no library, no inline script); numbers only.
import { fmtDuration } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 90;

function node(tag, attrs) {
  const made = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) made.setAttribute(key, String(value));
  return made;
}

/** `runs`: records, newest first; draws up to `limit` finished ones. */
export function drawDurations(root, runs, limit = 40) {
  const done = runs.filter((run) => run.started_at && run.finished_at).slice(0, limit).reverse();
  if (!done.length) {
    root.replaceChildren();
    root.hidden = true;
    return;
  }
  root.hidden = false;
  const ms = done.map((run) => Date.parse(run.finished_at) - Date.parse(run.started_at));
  const max = Math.max(...ms, 1);
  const slot = W / Math.max(done.length, 10);
  const svg = node("svg", { viewBox: `0 0 ${W} ${H + 14}`, role: "img", class: "chart" });
  const title = node("title", {});
  title.textContent = `Durations of the last ${done.length} finished runs; longest ${fmtDuration(max)}`;
  svg.append(title);
  done.forEach((run, i) => {
    const height = Math.max(2, (ms[i] / max) * H);
    const bar = node("rect", { x: i * slot + 1, y: H - height, width: Math.max(2, slot - 2), height, class: `c-${run.status}` });
    const tip = node("title", {});
    tip.textContent = `${run.function} ${run.id.slice(-8)}: ${run.status}, ${fmtDuration(ms[i])}`;
    bar.append(tip);
    svg.append(bar);
  });
  const label = node("text", { x: 0, y: H + 12, class: "chart-label" });
  label.textContent = `longest ${fmtDuration(max)} · last ${done.length} finished runs`;
  svg.append(label);
  root.replaceChildren(svg);
}
