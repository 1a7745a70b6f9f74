// The run view's state, built from event envelopes by a pure reducer.
// The live stream and a replay feed the same `apply`, so a replayed timeline is
// by construction the one that was shown live. Everything the page draws (steps,
// log, waterfall, clocks) is read from this state, which is why a replay's badge,
// duration and timeline cursor always agree: they all come from `lastAt`.

export const TERMINAL = new Set(["run.succeeded", "run.failed", "run.cancelled"]);

export function initialState(plan = []) {
  const steps = new Map();
  for (const name of plan) steps.set(name, blankStep(name));
  return {
    steps, // name -> {name, status, message, duration_ms, seq, attempt, startedAt, reusedFrom}
    pct: null,
    message: "",
    status: "queued",
    attempt: 0,
    events: [], // every envelope, in seq order (the log reads this)
    stepNames: new Set(), // every step named by an event (the log's step filter)
    lanes: new Map(), // attempt -> {n, startAt, endAt, bars, gap}: the waterfall
    retry: null, // why the next attempt is needed (the last run.retrying's data)
    firstAt: null, // ms: the first event (run.queued)
    startedAt: null, // ms: the first run.started
    finishedAt: null, // ms: the terminal event
    lastAt: null, // ms: the last event applied (a replay's cursor)
    result: null,
    error: null,
    lastSeq: 0,
    count: 0,
  };
}

function blankStep(name) {
  return { name, status: "pending", message: "", seq: null, startedAt: null, duration_ms: null };
}

function step(state, name) {
  let entry = state.steps.get(name);
  if (!entry) {
    entry = blankStep(name);
    state.steps.set(name, entry);
  }
  return entry;
}

function lane(state, attempt, at) {
  let found = state.lanes.get(attempt);
  if (!found) {
    found = { n: attempt, startAt: null, endAt: at, bars: [], gap: null };
    state.lanes.set(attempt, found);
  }
  return found;
}

/** The open bar of `name` in `lane`, or a new zero-length one (a reused step has no start). */
function bar(laneEntry, name, at) {
  for (let i = laneEntry.bars.length - 1; i >= 0; i--) {
    const found = laneEntry.bars[i];
    if (found.name === name && found.endAt === null) return found;
  }
  const made = { name, startAt: at, endAt: null, status: "running" };
  laneEntry.bars.push(made);
  return made;
}

function gapReason(retry) {
  if (!retry) return "waiting for a worker";
  if (retry.reason) return `no worker: ${retry.reason}`;
  if (retry.error) return `retry after: ${retry.error}`;
  return "waiting to retry";
}

/** Apply one envelope; returns the same (mutated) state for convenience. */
export function apply(state, env) {
  if (env.seq <= state.lastSeq) return state; // a duplicate can never count twice
  const at = Date.parse(env.at);
  state.lastSeq = env.seq;
  state.count += 1;
  state.events.push(env);
  state.firstAt ??= at;
  state.lastAt = at;
  state.attempt = env.attempt;
  if (env.step) state.stepNames.add(env.step);
  if (env.pct !== null && env.pct !== undefined) state.pct = env.pct;
  if (env.message) state.message = env.message;
  const data = env.data && typeof env.data === "object" ? env.data : {};
  const current = env.attempt > 0 ? lane(state, env.attempt, at) : null;
  if (current && current.startAt !== null) current.endAt = at;
  switch (env.type) {
    case "run.started": {
      state.status = "running";
      state.startedAt ??= at;
      current.startAt = at;
      current.endAt = at;
      const previous = state.lanes.get(env.attempt - 1);
      const fromAt = previous ? previous.endAt : state.firstAt;
      current.gap = { fromAt, toAt: at, reason: previous ? gapReason(state.retry) : "queued" };
      break;
    }
    case "run.retrying":
      state.status = "retrying";
      state.retry = data;
      break;
    case "step.started": {
      const entry = step(state, env.step);
      Object.assign(entry, { status: "running", message: env.message || "", attempt: env.attempt });
      entry.seq ??= env.seq;
      entry.startedAt ??= at;
      if (current) Object.assign(bar(current, env.step, at), { startAt: at, endAt: null, status: "running" });
      break;
    }
    case "step.completed": {
      const entry = step(state, env.step);
      const reused = Boolean(data.reused);
      Object.assign(entry, {
        status: reused ? "reused" : "done",
        duration_ms: data.duration_ms ?? entry.duration_ms,
        reusedFrom: reused ? data.from_attempt : null,
        attempt: env.attempt,
      });
      entry.seq ??= env.seq;
      entry.startedAt ??= at;
      if (!entry.message) entry.message = env.step;
      if (current) Object.assign(bar(current, env.step, at), { endAt: at, status: reused ? "reused" : "done" });
      break;
    }
    case "step.failed": {
      const entry = step(state, env.step);
      Object.assign(entry, { status: "failed", duration_ms: data.duration_ms ?? null, error: env.message || "" });
      entry.seq ??= env.seq;
      if (current) Object.assign(bar(current, env.step, at), { endAt: at, status: "failed" });
      break;
    }
    case "run.succeeded":
      state.status = "succeeded";
      state.pct ??= 100; // a run that reported no progress (the archiver's) is still done
      state.result = data.result ?? null;
      state.finishedAt = at;
      break;
    case "run.failed":
      state.status = "failed";
      state.error = data.error || env.message || "failed";
      state.finishedAt = at;
      break;
    case "run.cancelled":
      state.status = "cancelled";
      state.finishedAt = at;
      break;
    default:
      break;
  }
  return state;
}

/** The timeline as plain rows (what tests compare between live and replay). */
export function timeline(state) {
  return [...state.steps.values()].map((s) => `${s.name}:${s.status}`);
}
