// One run, live or replayed: wires the stream (stream.js), the reducer (runview.js)
// and the parts of the page (steps, waterfall, log, result, actions) together.
// Every part is drawn from the reducer's state and one notion of "now": the wall
// clock while live, the last replayed event while replaying, so the badge, the
// clocks and the timeline cursor always agree.
import { apply, initialState, TERMINAL } from "./runview.js";
import { el, fmtAgo, fmtDuration, setText } from "./dom.js";
import { runStream } from "./stream.js";
import { logView } from "./logview.js";
import { drawTimeline } from "./timeline.js";
import { drawSteps } from "./steps.js";
import { jsonTree, profileCard } from "./result.js";
import { actions } from "./actions.js";
import { slicer } from "./slices.js";

const runId = decodeURIComponent(location.pathname.split("/")[2] || "");
const query = new URLSearchParams(location.search);
const token = query.get("token");
const fromSeq = Number.parseInt(query.get("from") || "", 10);
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

let run = null;
let state = initialState();
let mode = "live"; // or "replay"
let speed = 0; // the replay's speed; 0 for instant (no cursor to show)
let playback = null; // a running replay's timer
let replaying = 0; // bumped by every replay: an older one still reading stops
let scheduled = false;
let skew = Infinity; // browser clock minus server clock (plus latency), from live events
let linkExpired = false; // the token in the URL has expired: nothing more will be let in

function withToken(path, extra = {}) {
  const params = new URLSearchParams(extra);
  if (token) params.set("token", token);
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

function connection(kind, detail = "") {
  const node = $("connection");
  node.dataset.state = kind;
  node.textContent = detail ? `${kind} (${detail})` : kind;
}

/** Where time stands for every part of the page (ms, server clock). */
function now() {
  if (mode === "replay") return state.lastAt ?? state.firstAt ?? 0;
  if (state.finishedAt !== null) return state.finishedAt;
  return Date.now() - (Number.isFinite(skew) ? skew : 0);
}

// ---- rendering -------------------------------------------------------------

const log = logView({
  scroller: $("log-scroll"),
  list: $("logs"),
  jump: $("jump-live"),
  stepFilter: $("filter-step"),
  typeFilter: $("filter-type"),
  textFilter: $("filter-text"),
  onPick: showEnvelope,
  onCount(shown, total) {
    setText("shown-count", shown);
    setText("event-count", total);
  },
});

function render() {
  scheduled = false;
  const pct = state.pct ?? 0;
  $("bar").value = pct;
  setText("pct", `${Math.round(pct)}%`);
  setText("message", state.message);
  setText("status", state.status);
  $("status").dataset.status = state.status;
  setText("attempt", state.attempt || run?.attempt || 0);
  log.update(state);
  renderResult();
  tick();
}

/** What moves with the clock: durations, the running step, the waterfall. */
function tick() {
  const at = now();
  const startedAt = state.startedAt ?? (run?.started_at ? Date.parse(run.started_at) : null);
  if (startedAt !== null) {
    const end = mode === "live" && run?.finished_at && state.finishedAt === null ? Date.parse(run.finished_at) : at;
    setText("duration", fmtDuration(Math.max(0, end - startedAt)));
    setText("started", `${new Date(startedAt).toLocaleString()} (${fmtAgo(Date.now() - startedAt)})`);
  }
  drawSteps($("steps"), state, at, (seq) => withToken(`/runs/${runId}`, { from: seq }));
  const until = mode === "replay" && run?.finished_at ? Date.parse(run.finished_at) : null;
  drawTimeline($("timeline"), state, at, { live: mode === "replay" || state.finishedAt === null, cursor: mode === "replay" && speed > 0, until });
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(render);
  }
}

let shownResult = undefined;
function renderResult() {
  const finished = TERMINAL.has(`run.${state.status}`);
  $("result").hidden = !finished;
  if (!finished) {
    shownResult = undefined;
    return;
  }
  const result = state.result ?? run?.result ?? null;
  $("error").hidden = !state.error;
  $("error").textContent = state.error || "";
  if (result === shownResult) return;
  shownResult = result;
  setText("raw", JSON.stringify(result, null, 2));
  const card = profileCard(result);
  $("card").hidden = !card;
  $("card").replaceChildren(...(card || []));
  $("tree").replaceChildren(card || result === null ? "" : jsonTree(result));
}

function showEnvelope(env) {
  $("envelope").hidden = false;
  setText("envelope-seq", `#${env.seq} · ${env.type}`);
  setText("envelope-json", JSON.stringify(env, null, 2));
  setText("envelope-copied", "");
  $("envelope-replay").setAttribute("href", withToken(`/runs/${runId}`, { from: env.seq }));
}

$("envelope-close").addEventListener("click", () => {
  $("envelope").hidden = true;
  $("log-scroll").focus();
});
$("envelope-copy").addEventListener("click", async () => {
  const text = $("envelope-json").textContent;
  try {
    await navigator.clipboard.writeText(text);
    setText("envelope-copied", "copied");
  } catch {
    getSelection().selectAllChildren($("envelope-json")); // no clipboard access: select it for Ctrl+C
    setText("envelope-copied", "selected: press Ctrl+C to copy");
  }
});

function renderHeader() {
  setText("function", run.function);
  setText("run-id", run.id);
  setText("params", JSON.stringify(run.params, null, 2));
  document.title = `${run.function} ${run.id.slice(-6)} · steplog`;
}

// ---- live ------------------------------------------------------------------

const stream = runStream((after) => withToken(`/runs/${runId}/events`, after ? { last_event_id: after } : {}), {
  onEvent(env, name) {
    skew = Math.min(skew, Date.now() - Date.parse(env.at));
    apply(state, env);
    schedule();
    if (name !== "progress") refreshRun();
  },
  onConnection: connection,
  lastSeq: () => state.lastSeq,
  async settle(seen) {
    const current = await refreshRun(true);
    if (linkExpired) return "stop"; // said once, by `expired`; retrying would only be refused again
    return current && FINISHED.has(current.status) && seen >= current.last_seq ? "ended" : "retry";
  },
}, { log: logPage, shared: { run: runId, token } });

/** A page of the run's log after `after` (null if it could not be read). */
async function logPage(after, limit) {
  const headers = { Accept: "application/json" };
  const response = await fetch(withToken(`/runs/${runId}/log`, { after, limit }), { headers }).catch(() => null);
  if (!response?.ok) return null;
  return (await response.json()).events;
}

function follow(afterSeq) {
  if (playback) clearTimeout(playback);
  mode = "live";
  stream.follow(afterSeq);
}

// ---- replay ----------------------------------------------------------------

/** Read the whole log in pages, handing each page to `each` as it arrives; `each` returns false to stop. */
async function readLog(each) {
  let after = 0;
  for (;;) {
    const response = await fetch(withToken(`/runs/${runId}/log`, { after, limit: 5000 }), {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      if (await isExpired(response)) expired();
      throw new Error(`reading events failed: ${response.status}`);
    }
    const page = (await response.json()).events;
    if ((await each(page)) === false || page.length < 5000) return;
    after = page[page.length - 1].seq;
  }
}

async function replay(playSpeed, startSeq = 1) {
  if (playback) clearTimeout(playback);
  stream.stop();
  mode = "replay";
  speed = playSpeed;
  state = initialState(run.steps || []);
  const events = [];
  connection("replaying", speed ? "loading" : "instant");
  // Instant: each page is applied as it arrives, in slices of a few milliseconds,
  // so even a 100,000-event run never holds the main thread for long.
  // A newer replay (or going live) supersedes this one wherever it is waiting.
  const mine = (replaying += 1);
  const current = () => mine === replaying && mode === "replay";
  await readLog(async (page) => {
    const slice = slicer();
    for (const event of page) {
      if (!current()) return false;
      if (!speed || event.seq < startSeq) apply(state, event);
      else events.push(event);
      if (slice.due()) {
        if (!speed) schedule();
        await slice.pause();
      }
    }
    if (!speed) schedule();
    return current();
  });
  if (!current()) return;
  if (!speed) {
    render();
    connection("ended", "replayed");
    return;
  }
  connection("replaying", `${speed}×`);
  let index = 0;
  const step = () => {
    if (index >= events.length) {
      connection("ended", "replayed");
      return;
    }
    const event = events[index++];
    apply(state, event);
    schedule();
    const next = events[index];
    const gap = next ? Math.max(0, (Date.parse(next.at) - Date.parse(event.at)) / speed) : 0;
    playback = setTimeout(step, Math.min(gap, 5000));
  };
  render();
  step();
}

// ---- start -----------------------------------------------------------------

// The server answers an expired run token with 401 and `"reason": "token_expired"`.
// EventSource cannot see that status, so the page learns it from what it fetches itself.
async function isExpired(response) {
  if (response.status !== 401) return false;
  const problem = await response.clone().json().catch(() => null);
  return problem?.reason === "token_expired";
}

/** Stop for good and say why: the link is no longer valid, and retrying cannot help. */
function expired() {
  linkExpired = true;
  stream.stop();
  if (playback) clearTimeout(playback);
  $("expired").hidden = false;
  connection("expired"); // the notice above the run says what to do
}

/** The whole page becomes the error page (the run went away, or the link was refused). */
function notValid() {
  stream.stop();
  const main = document.querySelector("main");
  main.className = "narrow";
  main.replaceChildren(
    el(
      "section",
      { class: "error-page", "aria-labelledby": "error-title" },
      el("p", { class: "error-mark", "aria-hidden": "true", text: "⚠" }),
      el("h1", { id: "error-title", text: "This link is not valid or has expired" }),
      el("p", { text: "Ask whoever sent it for a new link. A link to a run works for a limited time and only for that run." }),
      el("p", {}, "If you have the API key, ", el("a", { href: "/login", text: "log in" }), " to see every run."),
    ),
  );
  $("connection").remove();
}

const showActions = actions({
  root: $("actions"),
  cancel: $("cancel"),
  rerun: $("rerun"),
  error: $("action-error"),
  runId,
  onChanged: () => refreshRun(),
});

/** Fetch and show the run record; null if that failed (said in the indicator unless `quiet`). */
async function refreshRun(quiet = false) {
  const headers = { Accept: "application/json" };
  const response = await fetch(withToken(`/runs/${runId}`), { headers }).catch(() => null); // unreachable
  if (!response?.ok) {
    if (response && (await isExpired(response))) {
      if (run) expired(); // while watching: keep what was shown, and say why it stopped
      else notValid();
      return null;
    }
    if (!run && response && [401, 403, 404].includes(response.status)) {
      notValid();
      return null;
    }
    if (quiet) return null;
    const problem = (await response?.json().catch(() => null)) || {};
    connection("error", problem.detail || response?.status || "server unreachable");
    return null;
  }
  run = await response.json();
  renderHeader();
  showActions(run);
  const finished = FINISHED.has(run.status);
  $("replay-controls").hidden = !finished;
  $("live-controls").hidden = finished;
  schedule();
  return run;
}

async function start() {
  if (!(await refreshRun())) return;
  state = initialState(run.steps || []);
  const finished = FINISHED.has(run.status);
  for (const button of document.querySelectorAll("[data-speed]")) {
    button.addEventListener("click", () => replay(Number(button.dataset.speed)));
  }
  $("join-start").addEventListener("click", () => {
    state = initialState(run.steps || []);
    follow(0);
  });
  $("join-now").addEventListener("click", async () => {
    const current = await refreshRun();
    state = initialState(run.steps || []);
    state.status = run.status; // what came before is not replayed, so say where it stands
    follow(current ? current.last_seq : 0);
  });
  setInterval(() => {
    if (mode === "live" && state.finishedAt === null) tick();
  }, 1000);
  if (Number.isFinite(fromSeq) && fromSeq > 0) {
    await replay(finished ? 1 : 0, fromSeq);
    if (!finished) follow(state.lastSeq);
  } else if (finished) {
    await replay(0);
  } else {
    follow(0);
  }
}

start();
