// The SharedWorker that holds ONE stream for every tab of this browser (per origin).
//
// Why: a browser opens at most six HTTP/1.1 connections per host, and each view
// used to hold its own EventSource, so the seventh tab never went live. Here the
// tabs (shared.js) post what they follow: a run (with its token, if the tab has
// one) or every run (the runs list, API key cookie). This worker opens
// `GET /streams?run=<id>:<token>&…[&all=1]` (stream/sse/multi.py) for the union,
// and hands each event to the tabs that follow its run.
//
// One cursor resumes it all: the global `pos` of the last frame (an event or a
// `position`, which the server sends when idle). When the set changes, the
// stream is opened again from that cursor, so no event of a run already followed
// is lost; a newly added run's earlier events are read by its tab from the log
// once it hears `open` (the stream is then already following that run).
//
// A tab that goes away says `bye` on pagehide; should it die without a word, the
// Web Lock it holds is released and this worker, queued on that lock, drops it.
// When the last tab goes, the browser ends this worker and with it the stream.
import { backoff } from "./retry.js";

const MAX_RUNS = 64; // as the server's MAX_RUNS: more runs go to per-run streams
const SETTLE_MS = 40; // tabs opened together change the set once, not once each
const NAMES = ["progress", "completed", "failed", "cancelled"];

/** key "tab/id" -> { port, id, tab, run, token, all } */
const subs = new Map();
const watchedTabs = new Set();
const retry = backoff();
let source = null;
let shape = ""; // the query (without cursor) of the open stream
let cursor = null; // the global pos everything up to which was delivered
let planned = null;

function send(sub, message) {
  try {
    sub.port.postMessage({ id: sub.id, ...message });
  } catch {
    // a port whose tab is gone: its lock's release drops it
  }
}

function broadcast(message) {
  for (const sub of subs.values()) send(sub, message);
}

function query() {
  const params = new URLSearchParams();
  const runs = new Map();
  let all = false;
  for (const sub of subs.values()) {
    if (sub.all) all = true;
    else if (!runs.has(sub.run) || (!runs.get(sub.run) && sub.token)) runs.set(sub.run, sub.token);
  }
  for (const [run, token] of [...runs].sort()) params.append("run", token ? `${run}:${token}` : run);
  if (all) params.set("all", "1");
  return params.toString();
}

function plan() {
  clearTimeout(planned);
  planned = setTimeout(connect, SETTLE_MS);
}

function close() {
  retry.cancel();
  if (source) source.close();
  source = null;
  shape = "";
}

function connect() {
  planned = null;
  const wanted = query();
  if (!subs.size) {
    close();
    return;
  }
  if (wanted === shape && source && source.readyState !== EventSource.CLOSED) {
    if (source.readyState === EventSource.OPEN) broadcast({ type: "open" }); // the newcomers
    return;
  }
  close();
  shape = wanted;
  const url = `/streams?${wanted}${cursor === null ? "" : `&last_event_id=${cursor}`}`;
  const opened = new EventSource(url);
  source = opened;
  opened.onopen = () => {
    retry.reset();
    broadcast({ type: "open" });
  };
  opened.onerror = () => {
    if (source !== opened) return;
    if (opened.readyState !== EventSource.CLOSED) {
      broadcast({ type: "reconnecting" }); // a dropped connection: EventSource resumes by itself
      return;
    }
    // Not a stream (a 429 over a cap, a proxy's 502 while the server restarts):
    // EventSource gave up and cannot tell us why. Open it again later.
    source = null;
    shape = "";
    const seconds = retry.schedule(connect);
    broadcast({ type: "unavailable", seconds });
  };
  const advance = (message) => {
    const pos = Number(message.lastEventId);
    if (Number.isFinite(pos) && message.lastEventId !== "") {
      if (cursor !== null && pos <= cursor) return false; // seen on the stream before this one
      cursor = pos;
    }
    return true;
  };
  for (const name of NAMES) {
    opened.addEventListener(name, (message) => {
      if (source !== opened || !advance(message)) return;
      const env = JSON.parse(message.data);
      for (const sub of subs.values()) {
        if (sub.all || sub.run === env.run_id) send(sub, { type: "event", name, env });
      }
    });
  }
  opened.addEventListener("position", (message) => {
    if (source === opened) advance(message);
  });
  opened.addEventListener("refused", (message) => {
    if (source !== opened) return;
    const { run_id: run, reason } = JSON.parse(message.data);
    for (const [key, sub] of subs) {
      if ((run === "*" && sub.all) || (!sub.all && sub.run === run)) {
        subs.delete(key);
        send(sub, { type: "refused", reason });
      }
    }
    plan(); // the others go on, on a stream without the refused ones
  });
}

function dropTab(tab) {
  for (const [key, sub] of subs) if (sub.tab === tab) subs.delete(key);
  watchedTabs.delete(tab);
  plan();
}

function watchTab(tab) {
  if (watchedTabs.has(tab) || !self.navigator.locks) return;
  watchedTabs.add(tab);
  // Granted only once the tab's own hold on this lock ends: when the tab is gone.
  self.navigator.locks.request(`steplog-tab-${tab}`, () => dropTab(tab));
}

function runsFollowed() {
  return new Set([...subs.values()].filter((s) => !s.all).map((s) => s.run));
}

function handle(port, message) {
  const { type, tab, id } = message || {};
  if (typeof tab !== "string") return;
  const key = `${tab}/${id}`;
  if (type === "subscribe") {
    watchTab(tab);
    const sub = { port, tab, id, all: Boolean(message.all), run: String(message.run || ""), token: message.token || null };
    if (!sub.all && !runsFollowed().has(sub.run) && runsFollowed().size >= MAX_RUNS) {
      send(sub, { type: "fallback" }); // the tab opens its own stream
      return;
    }
    subs.set(key, sub);
    plan();
  } else if (type === "unsubscribe") {
    subs.delete(key);
    plan();
  } else if (type === "bye") {
    dropTab(tab);
  }
}

self.onconnect = (event) => {
  const port = event.ports[0];
  port.onmessage = (message) => handle(port, message.data);
  port.start();
};
