// The runs list: loaded once, then kept current from the global event stream.
import { el, fmtMs } from "./dom.js";
import { backoff } from "./retry.js";

const rows = new Map(); // run id -> run record (with pct)
const table = document.querySelector("#runs tbody");
const filters = document.getElementById("filters");

function connection(kind, detail = "") {
  const node = document.getElementById("connection");
  node.dataset.state = kind;
  node.textContent = detail ? `${kind} (${detail})` : kind;
}

function target(run) {
  const params = run.params || {};
  if (params.url) return params.url;
  if (run.function === "ticker") return `${params.count ?? "?"} ticks`;
  return "";
}

function visible(run) {
  const status = filters.elements.status.value;
  const fn = filters.elements.function.value;
  return (!status || run.status === status) && (!fn || run.function === fn);
}

function render() {
  const list = [...rows.values()].filter(visible).sort((a, b) => (a.id < b.id ? 1 : -1));
  table.replaceChildren(
    ...list.map((run) => {
      const started = run.started_at ? new Date(run.started_at) : null;
      const ended = run.finished_at ? new Date(run.finished_at) : null;
      const pct = run.pct ?? (run.status === "succeeded" ? 100 : 0);
      return el(
        "tr",
        { "data-run": run.id, "data-status": run.status },
        el("td", {}, el("span", { class: "badge", "data-status": run.status, text: run.status })),
        el("td", {}, el("a", { href: `/runs/${run.id}`, text: run.function })),
        el("td", { class: "target", text: target(run) }),
        el("td", {}, el("progress", { max: 100, value: pct, "aria-label": `${Math.round(pct)}%` })),
        el("td", { text: started ? started.toLocaleTimeString() : "–" }),
        el("td", { text: started && ended ? fmtMs(ended - started) : "" }),
      );
    }),
  );
}

async function load() {
  const response = await fetch("/runs?limit=200", { headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) {
    location.href = "/login";
    return null;
  }
  const body = await response.json();
  for (const run of body.runs) rows.set(run.id, run);
  const names = new Set(body.runs.map((run) => run.function));
  for (const name of body.functions || []) names.add(name);
  const select = filters.elements.function;
  for (const name of [...names].sort()) select.append(el("option", { text: name }));
  render();
  return body;
}

async function refresh(id) {
  const response = await fetch(`/runs/${id}`, { headers: { Accept: "application/json" } });
  if (response.ok) {
    const run = await response.json();
    const known = rows.get(id);
    rows.set(id, { ...run, pct: known ? known.pct : null });
    render();
  }
}

const retry = backoff();
let lastId = 0; // the global position of the last event seen: where a new stream resumes

function live() {
  const source = new EventSource(`/events?last_event_id=${lastId}`);
  source.onopen = () => {
    retry.reset();
    connection("live");
  };
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      connection("reconnecting"); // a dropped connection: EventSource resumes by itself
      return;
    }
    // The global stream has no normal end, so CLOSED means the answer was not a
    // stream (a 429 over the stream cap, a proxy's 502/503 while the server
    // restarts), which EventSource gives up on and hides from us: open a new one
    // later. Said once per attempt, not counted down: the indicator is a live region.
    const seconds = retry.schedule(live);
    connection("unavailable", `retrying in ${seconds} s`);
  };
  const handle = (message) => {
    lastId = message.lastEventId || lastId;
    const env = JSON.parse(message.data);
    const run = rows.get(env.run_id);
    if (!run || env.type.startsWith("run.")) {
      refresh(env.run_id); // new run or a status change: fetch the record
    }
    if (run && env.pct !== null) {
      run.pct = env.pct;
      render();
    }
  };
  for (const name of ["progress", "completed", "failed", "cancelled"]) {
    source.addEventListener(name, handle);
  }
}

async function start(fn, params) {
  const error = document.getElementById("start-error");
  error.hidden = true;
  const response = await fetch("/runs", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ function: fn, params }),
  });
  const body = await response.json();
  if (!response.ok) {
    error.textContent = `${body.title}: ${body.detail}`;
    error.hidden = false;
    return;
  }
  location.href = body.view_url;
}

document.getElementById("start-scrape").addEventListener("submit", (event) => {
  event.preventDefault();
  start("scrape", { url: event.target.elements.url.value });
});
document.getElementById("start-ticker").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target.elements;
  start("ticker", { count: Number(form.count.value), interval_ms: Number(form.interval_ms.value) });
});
filters.addEventListener("change", render);

const first = await load();
if (first) {
  const demo = first.demo_url;
  if (demo) document.getElementById("scrape-url").value = demo;
  else document.getElementById("start-scrape").hidden = !first.functions?.includes("scrape");
  lastId = first.head ?? 0;
  live();
}
