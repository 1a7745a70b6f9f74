// The run view's state, built from event envelopes by a pure reducer.
// The live stream and a replay feed the same `apply`, so a replayed timeline is
// by construction the one that was shown live.

export const TERMINAL = new Set(["run.succeeded", "run.failed", "run.cancelled"]);

export function initialState(plan = []) {
  const steps = new Map();
  for (const name of plan) steps.set(name, { name, status: "pending", message: "", seq: null });
  return {
    steps, // name -> {name, status, message, duration_ms, seq, attempt}
    pct: null,
    message: "",
    status: "queued",
    attempt: 0,
    logs: [], // {seq, at, message}
    result: null,
    error: null,
    lastSeq: 0,
    count: 0,
  };
}

function step(state, name) {
  let entry = state.steps.get(name);
  if (!entry) {
    entry = { name, status: "pending", message: "", seq: null };
    state.steps.set(name, entry);
  }
  return entry;
}

/** Apply one envelope; returns the same (mutated) state for convenience. */
export function apply(state, env) {
  if (env.seq <= state.lastSeq) return state; // a duplicate can never count twice
  state.lastSeq = env.seq;
  state.count += 1;
  state.attempt = env.attempt;
  if (env.pct !== null && env.pct !== undefined) state.pct = env.pct;
  if (env.message) state.message = env.message;
  const data = env.data && typeof env.data === "object" ? env.data : {};
  switch (env.type) {
    case "run.started":
      state.status = "running";
      break;
    case "run.retrying":
      state.status = "retrying";
      break;
    case "step.started": {
      const entry = step(state, env.step);
      Object.assign(entry, { status: "running", message: env.message || "", seq: env.seq, attempt: env.attempt });
      break;
    }
    case "step.completed": {
      const entry = step(state, env.step);
      Object.assign(entry, {
        status: data.reused ? "reused" : "done",
        message: env.message || "",
        duration_ms: data.duration_ms ?? null,
        seq: entry.seq ?? env.seq,
        attempt: env.attempt,
      });
      break;
    }
    case "step.failed": {
      const entry = step(state, env.step);
      Object.assign(entry, { status: "failed", message: env.message || "", duration_ms: data.duration_ms ?? null });
      break;
    }
    case "log":
      state.logs.push({ seq: env.seq, at: env.at, message: env.message || "" });
      break;
    case "run.succeeded":
      state.status = "succeeded";
      state.result = data.result ?? null;
      break;
    case "run.failed":
      state.status = "failed";
      state.error = data.error || env.message || "failed";
      break;
    case "run.cancelled":
      state.status = "cancelled";
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
