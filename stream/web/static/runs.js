// The runs list: a page at a time (cursor pagination: "before" the last run shown),
// kept current from the global event stream; counts per status over the whole log,
// a chart of recent durations, and each row a link to its run page.
import { el, fmtAgo, fmtDuration } from "./dom.js";
import { backoff } from "./retry.js";
import { drawDurations } from "./chart.js";
import { subscribe } from "./shared.js";

const PAGE = 50;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const rows = new Map(); // run id -> run record (with pct)
const table = document.querySelector("#runs tbody");
const filters = document.getElementById("filters");
const more = document.getElementById("more");
let cursor = null; // the oldest run id loaded: the next page is before it
let generation = 0; // bumped when the filters change, so a late page is dropped

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
  if (run.internal && run.function !== fn) return false; // steplog's own (the archiver's)
  return (!status || run.status === status) && (!fn || run.function === fn);
}

function duration(run) {
  if (!run.started_at) return "";
  const end = run.finished_at ? Date.parse(run.finished_at) : Date.now();
  return fmtDuration(Math.max(0, end - Date.parse(run.started_at)));
}

function actionButtons(run) {
  const live = run.status === "queued" || run.status === "running";
  // The buttons may stack (style.css): the column then takes one button's width, so a
  // running row (two buttons) never pushes the table past its box.
  return el(
    "td",
    { class: "row-actions" },
    el(
      "div",
      { class: "acts" },
      live ? el("button", { type: "button", "data-action": "cancel", "aria-label": `cancel run ${run.id.slice(-8)}`, text: "Cancel" }) : null,
      run.rerunnable === false ? null : el("button", { type: "button", "data-action": "rerun", "aria-label": `re-run ${run.id.slice(-8)}`, text: "Re-run" }),
    ),
  );
}

/** Today's runs by time alone; older ones by date and time. */
function when(date) {
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

function row(run) {
  const started = run.started_at ? new Date(run.started_at) : null;
  const pct = run.pct ?? (run.status === "succeeded" ? 100 : 0);
  return el(
    "tr",
    { "data-run": run.id, "data-status": run.status, class: "clickable" },
    el("td", {}, el("a", { href: `/runs/${run.id}`, class: "run-id", title: run.id, text: run.id.slice(-8) })),
    el("td", { text: run.function }),
    el("td", { class: "target", title: target(run), text: target(run) }),
    el("td", { class: "trigger", text: run.trigger || "" }),
    el("td", {}, el("span", { class: "badge", "data-status": run.status, text: run.status })),
    el(
      "td",
      { class: "pct" },
      el("progress", { max: 100, value: pct, "aria-label": `${Math.round(pct)}%` }),
      el("span", { text: `${Math.round(pct)}%` }),
    ),
    el("td", { class: "num", text: run.attempt }),
    el("td", { class: "when" }, started ? el("time", { datetime: run.started_at, title: started.toLocaleString(), text: when(started) }) : "–", started ? el("span", { class: "muted ago", text: ` ${fmtAgo(Date.now() - started)}` }) : null),
    el("td", { class: "num nowrap", "data-duration": run.id, text: duration(run) }),
    actionButtons(run),
  );
}

function render() {
  const list = [...rows.values()].filter(visible).sort((a, b) => (a.id < b.id ? 1 : -1));
  const empty = el("tr", { class: "empty" }, el("td", { colspan: 10, class: "muted", text: filters.elements.status.value || filters.elements.function.value ? "No runs match." : "No runs yet." }));
  table.replaceChildren(...(list.length ? list.map(row) : [empty]));
  drawDurations(document.getElementById("chart"), list);
}

function renderCounts(counts) {
  const items = STATUSES.map((status) =>
    el("li", { "data-status": status }, el("span", { class: "badge", "data-status": status, text: status }), " ", el("strong", { text: counts?.[status] ?? 0 })),
  );
  document.getElementById("counts").replaceChildren(...items);
}

function query(extra = {}) {
  const params = new URLSearchParams({ limit: PAGE, ...extra });
  if (filters.elements.status.value) params.set("status", filters.elements.status.value);
  if (filters.elements.function.value) params.set("function", filters.elements.function.value);
  return `/runs?${params}`;
}

async function fetchPage(extra) {
  const response = await fetch(query(extra), { headers: { Accept: "application/json" } });
  if (response.status === 401 || response.status === 403) {
    location.href = "/login";
    return null;
  }
  return response.ok ? response.json() : null;
}

/**
 * Load the newest page (replacing the list), the page before `cursor` (`next`), or,
 * with `merge`, the newest page into what is shown: the catch-up when the live stream
 * opens, which must not drop the older pages the reader loaded or one in flight.
 */
async function load(next = false, merge = false) {
  const mine = merge ? generation : ++generation;
  const body = await fetchPage(next && cursor ? { before: cursor } : {});
  if (!body || mine !== generation) return body;
  if (!next && !merge) rows.clear();
  for (const run of body.runs) rows.set(run.id, { ...run, pct: rows.get(run.id)?.pct ?? null });
  if (!merge) {
    if (body.runs.length) cursor = body.runs[body.runs.length - 1].id;
    more.hidden = body.runs.length < PAGE;
  }
  renderCounts(body.counts);
  render();
  return body;
}

async function refresh(id) {
  const response = await fetch(`/runs/${id}`, { headers: { Accept: "application/json" } });
  if (response.ok) {
    const run = await response.json();
    rows.set(id, { ...run, pct: rows.get(id)?.pct ?? null });
    render();
  }
}

let countsTimer = null;
function refreshCounts() {
  clearTimeout(countsTimer); // at most once a second, however busy the log is
  countsTimer = setTimeout(async () => {
    const body = await fetchPage({ limit: 1 });
    if (body) renderCounts(body.counts);
  }, 1000);
}

const retry = backoff();
let lastId = 0; // the global position of the last event seen: where a new stream resumes

/** An event of the global stream: new runs and status changes fetch the record. */
let painted = false;
function handle(env, pos) {
  lastId = pos || lastId;
  const run = rows.get(env.run_id);
  if (!run || env.type.startsWith("run.")) {
    refresh(env.run_id); // new run or a status change: fetch the record
    refreshCounts();
  }
  if (run && env.pct !== null) {
    run.pct = env.pct;
    if (!painted) {
      painted = true; // one repaint per frame, however many events arrive
      requestAnimationFrame(() => {
        painted = false;
        render();
      });
    }
  }
}

/** On the stream every tab of the browser shares (shared.js); false where there is none. */
function liveShared() {
  let opened = false;
  const subscription = subscribe({ all: true }, {
    open() {
      retry.reset();
      connection("live");
      // The shared stream resumes from its own cursor, which may be past this
      // page's first load: load once more now that the stream is following.
      if (!opened) {
        opened = true;
        load(false, true);
      }
    },
    event: (env) => handle(env, env.pos),
    state(kind, seconds) {
      connection(kind, kind === "unavailable" ? `retrying in ${seconds} s` : "");
    },
    refused() {
      location.href = "/login"; // the API key cookie is gone or no longer the key
    },
    fallback: liveOwn,
  });
  return subscription !== null;
}

function live() {
  if (!liveShared()) liveOwn();
}

function liveOwn() {
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
    const seconds = retry.schedule(liveOwn);
    connection("unavailable", `retrying in ${seconds} s`);
  };
  for (const name of ["progress", "completed", "failed", "cancelled"]) {
    source.addEventListener(name, (message) => handle(JSON.parse(message.data), message.lastEventId));
  }
}

async function post(path) {
  const error = document.getElementById("list-error");
  error.hidden = true;
  const response = await fetch(path, { method: "POST", headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    error.textContent = `${body.title || response.status}: ${body.detail || ""}`;
    error.hidden = false;
    return null;
  }
  return body;
}

async function start(fn, params) {
  const error = document.getElementById("start-error");
  error.hidden = true;
  const response = await fetch("/runs", {
    method: "POST",
    // A key per submission: a double click starts one run, and the list says "form".
    headers: { "Content-Type": "application/json", Accept: "application/json", "Idempotency-Key": `form-${crypto.randomUUID()}` },
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

// The whole row opens the run; its buttons and link do their own thing.
table.addEventListener("click", async (event) => {
  const tr = event.target.closest("tr[data-run]");
  if (!tr) return;
  const action = event.target.closest("button[data-action]")?.dataset.action;
  if (action === "cancel") {
    if (await post(`/runs/${tr.dataset.run}/cancel`)) refresh(tr.dataset.run);
  } else if (action === "rerun") {
    const made = await post(`/runs/${tr.dataset.run}/rerun`);
    if (made) location.href = made.view_url;
  } else if (!event.target.closest("a") && !getSelection().toString()) {
    location.href = `/runs/${tr.dataset.run}`;
  }
});
document.getElementById("start-scrape").addEventListener("submit", (event) => {
  event.preventDefault();
  start("scrape", { url: event.target.elements.url.value });
});
document.getElementById("start-ticker").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target.elements;
  start("ticker", { count: Number(form.count.value), interval_ms: Number(form.interval_ms.value) });
});
filters.addEventListener("change", () => load());
more.addEventListener("click", () => load(true));
setInterval(() => {
  for (const cell of table.querySelectorAll("tr[data-status='running'] [data-duration]")) {
    const run = rows.get(cell.dataset.duration);
    if (run) cell.textContent = duration(run);
  }
}, 1000);

const first = await load();
if (first) {
  const select = filters.elements.function;
  for (const name of [...new Set(first.functions || [])].sort()) select.append(el("option", { text: name }));
  const demo = first.demo_url;
  if (demo) document.getElementById("scrape-url").value = demo;
  else document.getElementById("start-scrape").hidden = !first.functions?.includes("scrape");
  lastId = first.head ?? 0;
  live();
}
