// Retrying after EventSource has given up.
//
// EventSource reconnects by itself after a dropped connection, but any answer
// other than a 200 event stream closes it for good: a 429 from the stream caps,
// a 502/503 from a proxy while the server restarts. It cannot see the status
// code, so the pages open a new EventSource themselves, after a delay that grows
// (a busy server is not hammered) and is jittered (browsers refused together do
// not all come back in the same second and get refused together again).

const FIRST_S = 3; // near the server's `Retry-After: 5` for a 429
const MAX_S = 30;
const JITTER = 0.25; // up to this fraction earlier, never later than MAX_S

export function backoff() {
  let failures = 0;
  let timer = null;
  return {
    /** Run `retry` after the next delay; returns the delay in whole seconds, to show it. */
    schedule(retry) {
      clearTimeout(timer);
      const base = Math.min(MAX_S, FIRST_S * 2 ** failures);
      failures += 1;
      const seconds = base * (1 - JITTER * Math.random());
      timer = setTimeout(retry, seconds * 1000);
      return Math.round(seconds);
    },
    cancel() {
      clearTimeout(timer);
      timer = null;
    },
    /** A stream opened: the next failure starts from the first delay again. */
    reset() {
      failures = 0;
    },
  };
}
