// The one place a run page opens its live stream (a per-run EventSource), so it can
// later be swapped for a connection shared by every tab without touching the view.
//
// The browser's own EventSource does the resuming after a drop: it reconnects by
// itself with Last-Event-ID, and a 204 tells it to stop. Any other answer but a 200
// stream (a 429, a proxy's 502) closes it for good, so then `settle` decides: the run
// has ended and everything was seen (stop), the link expired (stop), or retry later
// from the last event shown (and `apply` drops any event seen twice).
import { backoff } from "./retry.js";

const NAMES = ["progress", "completed", "failed", "cancelled"];

/**
 * handlers: onEvent(envelope, name), onConnection(kind, detail), lastSeq() -> number,
 * settle(seen) -> Promise<"ended" | "stop" | "retry">.
 */
export function runStream(url, handlers) {
  const retry = backoff();
  let source = null;
  let reconnects = 0;
  let joinedAt = 0;

  function stop() {
    retry.cancel();
    if (source) source.close();
    source = null;
  }

  function follow(afterSeq) {
    stop();
    reconnects = 0;
    joinedAt = afterSeq;
    const opened = new EventSource(url(afterSeq));
    source = opened;
    handlers.onConnection("connecting");
    opened.onopen = () => {
      retry.reset();
      handlers.onConnection("live");
    };
    opened.onerror = () => {
      if (opened.readyState === EventSource.CLOSED) {
        closed(opened);
        return;
      }
      reconnects += 1;
      handlers.onConnection("reconnecting", `attempt ${reconnects}, last event id ${handlers.lastSeq()}`);
    };
    for (const name of NAMES) {
      opened.addEventListener(name, (message) => {
        handlers.onEvent(JSON.parse(message.data), name);
        if (name !== "progress") {
          stop(); // the terminal event: nothing follows, so no reconnect either
          handlers.onConnection("ended");
        }
      });
    }
  }

  async function closed(closedSource) {
    const seen = () => Math.max(joinedAt, handlers.lastSeq());
    const verdict = await handlers.settle(seen());
    if (source !== closedSource) return; // a replay or a join was started meanwhile
    if (verdict === "ended") {
      stop();
      handlers.onConnection("ended");
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
