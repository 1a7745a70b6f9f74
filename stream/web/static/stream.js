// The one place a run page opens its live stream.
//
// Shared (the default): the run is followed on the one stream every tab of the
// browser shares (shared.js, hub.js), so any number of tabs stay live over
// HTTP/1.1's six connections per host. When that stream is following the run
// (`open`), what came before is read from the log (`GET /runs/{id}/log`) while
// live events wait in a buffer; then the buffer is applied, past the last seq
// read. The worker resumes the shared stream by itself after a drop.
//
// Own EventSource (the fallback, where there is no SharedWorker): the browser
// resumes after a drop with Last-Event-ID, and a 204 tells it to stop.
//
// Either way, when the stream gives up (a 429, a proxy's 502, a refused token),
// `settle` decides: the run has ended and everything was seen (stop), the link
// expired (stop), or retry later from the last event shown (and `apply` drops any
// event seen twice).
import { backoff } from "./retry.js";
import { subscribe } from "./shared.js";
import { slicer } from "./slices.js";

const NAMES = ["progress", "completed", "failed", "cancelled"];
const TERMINAL_NAMES = { "run.succeeded": "completed", "run.failed": "failed", "run.cancelled": "cancelled" };
const LOG_PAGE = 5000;

/**
 * url(afterSeq) -> the run's own stream; log(afterSeq) -> a page of its log;
 * shared: { run, token } to follow it on the shared stream (null: never).
 * handlers: onEvent(envelope, name), onConnection(kind, detail), lastSeq() -> number,
 * settle(seen) -> Promise<"ended" | "stop" | "retry">.
 */
export function runStream(url, handlers, { log, shared } = {}) {
  const retry = backoff();
  let source = null; // own EventSource
  let subscription = null; // or the shared stream
  let generation = 0; // bumped by every follow/stop: late callbacks of an older one are dropped
  let reconnects = 0;
  let joinedAt = 0;

  function stop() {
    generation += 1;
    retry.cancel();
    if (source) source.close();
    source = null;
    if (subscription) subscription.close();
    subscription = null;
  }

  function ended() {
    stop();
    handlers.onConnection("ended");
  }

  function follow(afterSeq) {
    stop();
    reconnects = 0;
    joinedAt = afterSeq;
    handlers.onConnection("connecting");
    if (!(shared && log && followShared(afterSeq))) followOwn(afterSeq);
  }

  function followShared(afterSeq) {
    const mine = generation;
    let buffer = []; // live events while the log before them is read; null once applied
    const deliver = (env, name) => {
      handlers.onEvent(env, name);
      if (name !== "progress") {
        ended(); // the terminal event: nothing follows
        return false;
      }
      return true;
    };
    const catchUp = async () => {
      let after = afterSeq;
      for (;;) {
        const events = await log(after, LOG_PAGE);
        if (mine !== generation) return;
        if (events === null) {
          lost();
          return;
        }
        const slice = slicer(); // a page is 5,000 events: applied in slices, the page stays responsive
        for (const env of events) {
          if (!deliver(env, TERMINAL_NAMES[env.type] || "progress")) return;
          if (slice.due()) {
            await slice.pause();
            if (mine !== generation) return;
          }
        }
        if (events.length < LOG_PAGE) break;
        after = events[events.length - 1].seq;
      }
      const waiting = buffer;
      buffer = null;
      for (const { env, name } of waiting) {
        if (env.seq > handlers.lastSeq() && !deliver(env, name)) return;
      }
    };
    const lost = () => {
      if (mine === generation) closed(() => mine === generation);
    };
    let opened = false;
    subscription = subscribe(shared, {
      open() {
        if (mine !== generation) return;
        retry.reset();
        handlers.onConnection("live");
        if (!opened) {
          opened = true;
          catchUp().catch(lost);
        }
      },
      event(env, name) {
        if (mine !== generation) return;
        if (buffer) buffer.push({ env, name });
        else deliver(env, name);
      },
      state(kind, seconds) {
        if (mine !== generation) return;
        const at = `last event id ${handlers.lastSeq()}`;
        if (kind === "reconnecting") {
          reconnects += 1;
          handlers.onConnection("reconnecting", `attempt ${reconnects}, ${at}`);
        } else {
          handlers.onConnection("unavailable", `retrying in ${seconds} s, ${at}`);
        }
      },
      refused() {
        subscription = null;
        lost(); // `settle` finds out why (an expired link says so) and whether to retry
      },
      fallback() {
        subscription = null;
        if (mine === generation) followOwn(Math.max(afterSeq, handlers.lastSeq()));
      },
    });
    return subscription !== null;
  }

  function followOwn(afterSeq) {
    const opened = new EventSource(url(afterSeq));
    source = opened;
    const mine = generation;
    opened.onopen = () => {
      retry.reset();
      handlers.onConnection("live");
    };
    opened.onerror = () => {
      if (opened.readyState === EventSource.CLOSED) {
        closed(() => mine === generation && source === opened);
        return;
      }
      reconnects += 1;
      handlers.onConnection("reconnecting", `attempt ${reconnects}, last event id ${handlers.lastSeq()}`);
    };
    for (const name of NAMES) {
      opened.addEventListener(name, (message) => {
        handlers.onEvent(JSON.parse(message.data), name);
        if (name !== "progress") ended(); // the terminal event: nothing follows, so no reconnect either
      });
    }
  }

  async function closed(current) {
    const seen = () => Math.max(joinedAt, handlers.lastSeq());
    const verdict = await handlers.settle(seen());
    if (!current()) return; // a replay or a join was started meanwhile
    if (verdict === "ended") {
      ended();
      return;
    }
    if (verdict === "stop") return;
    // Said once per attempt, not counted down: the indicator is a live region.
    const at = seen();
    const seconds = retry.schedule(() => follow(at));
    handlers.onConnection("unavailable", `retrying in ${seconds} s, last event id ${at}`);
  }

  return { follow, stop };
}
