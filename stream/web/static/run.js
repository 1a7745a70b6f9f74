// One run, live or replayed. The browser's own EventSource does the resuming
// after a drop: it reconnects by itself with Last-Event-ID, and a 204 tells it to
// stop. Any other answer but a 200 stream (a 429, a proxy's 502) closes it for
// good, so then the page opens a new one itself (see `closed`).
import { apply, initialState, TERMINAL } from "./runview.js";
import { el, fmtMs, setText } from "./dom.js";
import { backoff } from "./retry.js";

const runId = decodeURIComponent(location.pathname.split("/")[2] || "");
const query = new URLSearchParams(location.search);
const token = query.get("token");
const fromSeq = Number.parseInt(query.get("from") || "", 10);
const NAMES = ["progress", "completed", "failed", "cancelled"];
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

let run = null;
let state = initialState();
let source = null;
let playback = null; // a running replay's timer
let reconnects = 0;
let scheduled = false;
let joinedAt = 0; // the event id the stream was opened after ("watch from now" skips the past)
let linkExpired = false; // the token in the URL has expired: nothing more will be let in
const retry = backoff();

function withToken(path, extra = {}) {
  const params = new URLSearchParams(extra);
  if (token) params.set("token", token);
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

function connection(kind, detail = "") {
  const node = document.getElementById("connection");
  node.dataset.state = kind;
  node.textContent = detail ? `${kind} (${detail})` : kind;
}

// ---- rendering -------------------------------------------------------------

function render() {
  scheduled = false;
  const pct = state.pct ?? 0;
  document.getElementById("bar").value = pct;
  setText("pct", `${Math.round(pct)}%`);
  setText("message", state.message);
  setText("status", state.status);
  document.getElementById("status").dataset.status = state.status;
  setText("attempt", state.attempt);
  setText("event-count", state.count);
  renderSteps();
  renderLogs();
  renderResult();
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(render);
  }
}

function renderSteps() {
  const list = document.getElementById("steps");
  const rows = [];
  for (const step of state.steps.values()) {
    const link = step.seq ? el("a", { href: withToken(`/runs/${runId}`, { from: step.seq }) }, "replay from here") : null;
    rows.push(
      el(
        "li",
        { class: `step ${step.status}`, "data-step": step.name, "data-status": step.status },
        el("span", { class: "mark", "aria-hidden": "true", text: MARKS[step.status] || "·" }),
        el("span", { class: "name", text: step.name }),
        el("span", { class: "state", text: step.status }),
        el("span", { class: "msg", text: step.message }),
        el("span", { class: "dur", text: fmtMs(step.duration_ms) }),
        link,
      ),
    );
  }
  list.replaceChildren(...rows);
}

const MARKS = { pending: "○", running: "◐", done: "✓", failed: "✗", reused: "↺" };

let renderedLogs = 0;
function renderLogs() {
  const list = document.getElementById("logs");
  if (state.logs.length < renderedLogs) {
    list.replaceChildren();
    renderedLogs = 0;
  }
  for (const line of state.logs.slice(renderedLogs)) {
    list.append(el("li", { "data-seq": line.seq }, el("time", { text: line.at.slice(11, 19) }), " ", line.message));
  }
  renderedLogs = state.logs.length;
}

function renderResult() {
  const section = document.getElementById("result");
  const finished = TERMINAL.has(`run.${state.status}`);
  section.hidden = !finished;
  if (!finished) return;
  const error = document.getElementById("error");
  error.hidden = !state.error;
  error.textContent = state.error || "";
  setText("raw", JSON.stringify(state.result, null, 2));
  document.getElementById("card").replaceChildren(...card(state.result));
}

function card(result) {
  if (!result || typeof result !== "object") return [];
  const profile = result.profile && typeof result.profile === "object" ? result.profile : result;
  const parts = [];
  if (profile.name) {
    const ascii = profile.name_ascii && profile.name_ascii !== profile.name ? ` (${profile.name_ascii})` : "";
    parts.push(el("h3", { class: "name", text: `${profile.name}${ascii}` }));
  }
  if (profile.headline) parts.push(el("p", { class: "headline", text: profile.headline }));
  if (profile.location) parts.push(el("p", { class: "location", text: profile.location }));
  if (profile.about) parts.push(el("p", { class: "about", text: profile.about }));
  if (Array.isArray(profile.experience) && profile.experience.length) {
    parts.push(el("h4", { text: "Experience" }));
    parts.push(
      el(
        "ul",
        { class: "experience" },
        ...profile.experience.map((job) =>
          el("li", {}, [job.title, job.company].filter(Boolean).join(" · "), job.start || job.dates ? ` (${job.dates || [job.start, job.end || "now"].join("–")})` : ""),
        ),
      ),
    );
  }
  if (Array.isArray(profile.skills) && profile.skills.length) {
    parts.push(el("h4", { text: "Skills" }));
    parts.push(el("ul", { class: "skills" }, ...profile.skills.map((skill) => el("li", { text: typeof skill === "string" ? skill : JSON.stringify(skill) }))));
  }
  const analysis = result.analysis;
  if (analysis && typeof analysis === "object") {
    const facts = [];
    const level = analysis.seniority && typeof analysis.seniority === "object" ? analysis.seniority.level : analysis.seniority;
    if (level) facts.push(`seniority: ${level}`);
    if (typeof analysis.experience_years === "number") facts.push(`${analysis.experience_years} years of experience`);
    if (Array.isArray(analysis.keywords) && analysis.keywords.length) {
      facts.push(`keywords: ${analysis.keywords.slice(0, 5).map((k) => (typeof k === "object" ? k.word : k)).join(", ")}`);
    }
    if (facts.length) parts.push(el("p", { class: "analysis", text: facts.join(" · ") }));
  }
  return parts;
}

function renderHeader() {
  setText("function", run.function);
  setText("run-id", run.id);
  setText("params", JSON.stringify(run.params, null, 2));
  setText("started", run.started_at ? new Date(run.started_at).toLocaleString() : "–");
  if (run.started_at && run.finished_at) {
    setText("duration", fmtMs(new Date(run.finished_at) - new Date(run.started_at)));
  }
  document.title = `${run.function} ${run.id.slice(-6)} · steplog`;
}

// ---- live ------------------------------------------------------------------

/** Stop following: close the stream and forget a pending retry. */
function stop() {
  retry.cancel();
  if (source) source.close();
  source = null;
}

function follow(afterSeq) {
  stop();
  reconnects = 0;
  joinedAt = afterSeq;
  const params = afterSeq ? { last_event_id: afterSeq } : {};
  const opened = new EventSource(withToken(`/runs/${runId}/events`, params));
  source = opened;
  connection("connecting");
  opened.onopen = () => {
    retry.reset();
    connection("live");
  };
  opened.onerror = () => {
    if (opened.readyState === EventSource.CLOSED) {
      closed(opened);
      return;
    }
    reconnects += 1;
    connection("reconnecting", `attempt ${reconnects}, last event id ${state.lastSeq}`);
  };
  for (const name of NAMES) {
    opened.addEventListener(name, (message) => {
      apply(state, JSON.parse(message.data));
      schedule();
      if (name !== "progress") {
        stop(); // the terminal event: nothing follows, so no reconnect either
        connection("ended");
        refreshRun();
      }
    });
  }
}

// The EventSource closed for good. That is normal after the 204 for a run that
// has ended and whose events the page already has; anything else was a refusal
// or a failure (429 over a stream cap, 502/503 while the server restarts) that
// EventSource hides from us. The run record tells the two apart without opening
// a second stream; every other case retries later from the last event shown,
// so nothing is missed (and `apply` drops any event seen twice).
async function closed(closedSource) {
  const current = await refreshRun(true);
  if (linkExpired) return; // said once, by `expired`; retrying would only be refused again
  if (source !== closedSource) return; // a replay or a join was started meanwhile
  const seen = Math.max(joinedAt, state.lastSeq);
  if (current && FINISHED.has(current.status) && seen >= current.last_seq) {
    stop();
    connection("ended");
    return;
  }
  // Said once per attempt, not counted down: the indicator is a live region.
  const seconds = retry.schedule(() => follow(seen));
  connection("unavailable", `retrying in ${seconds} s, last event id ${seen}`);
}

// ---- replay ----------------------------------------------------------------

async function allEvents() {
  const events = [];
  let after = 0;
  for (;;) {
    const response = await fetch(withToken(`/runs/${runId}/log`, { after, limit: 1000 }), {
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      if (await isExpired(response)) expired();
      throw new Error(`reading events failed: ${response.status}`);
    }
    const page = (await response.json()).events;
    events.push(...page);
    if (page.length < 1000) return events;
    after = page[page.length - 1].seq;
  }
}

async function replay(speed, startSeq = 1) {
  if (playback) clearTimeout(playback);
  stop();
  const events = await allEvents();
  state = initialState(run.steps || []);
  renderedLogs = 0;
  let index = 0;
  while (index < events.length && events[index].seq < startSeq) apply(state, events[index++]);
  connection("replaying", speed ? `${speed}×` : "instant");
  if (!speed) {
    for (; index < events.length; index++) apply(state, events[index]);
    render();
    connection("ended", "replayed");
    return;
  }
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

// The server answers an expired run token with 401 and `"reason": "token_expired"`
// (a token that never opened this run keeps its 403). EventSource cannot see that
// status, so the page learns it from the run record or the log it fetches itself.

/** Whether `response` refuses the page's token because it has expired (reads its body). */
async function isExpired(response) {
  if (response.status !== 401) return false;
  const problem = await response.clone().json().catch(() => null);
  return problem?.reason === "token_expired";
}

/** Stop for good and say why: the link is no longer valid, and retrying cannot help. */
function expired() {
  linkExpired = true;
  stop();
  if (playback) clearTimeout(playback);
  document.getElementById("expired").hidden = false;
  connection("expired"); // the notice above the run says what to do
}

/** Fetch and show the run record; null if that failed (said in the indicator unless `quiet`). */
async function refreshRun(quiet = false) {
  const headers = { Accept: "application/json" };
  const response = await fetch(withToken(`/runs/${runId}`), { headers }).catch(() => null); // unreachable
  if (!response?.ok) {
    if (response && (await isExpired(response))) {
      expired(); // said even when `quiet`: it is the end of this page, not a passing failure
      return null;
    }
    if (quiet) return null;
    const problem = (await response?.json().catch(() => null)) || {};
    connection("error", problem.detail || response?.status || "server unreachable");
    return null;
  }
  run = await response.json();
  renderHeader();
  const finished = FINISHED.has(run.status);
  document.getElementById("replay-controls").hidden = !finished;
  document.getElementById("live-controls").hidden = finished;
  return run;
}

async function start() {
  if (!(await refreshRun())) return;
  state = initialState(run.steps || []);
  const finished = FINISHED.has(run.status);
  for (const button of document.querySelectorAll("[data-speed]")) {
    button.addEventListener("click", () => replay(Number(button.dataset.speed)));
  }
  document.getElementById("join-start").addEventListener("click", () => {
    state = initialState(run.steps || []);
    renderedLogs = 0;
    follow(0);
  });
  document.getElementById("join-now").addEventListener("click", async () => {
    const current = await refreshRun();
    state = initialState(run.steps || []);
    renderedLogs = 0;
    follow(current ? current.last_seq : 0);
  });
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
