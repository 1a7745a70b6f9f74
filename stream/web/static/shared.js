// A tab's side of the connection every tab of the browser shares (hub.js, a
// SharedWorker holding one `GET /streams` for all of them).
//
// `subscribe(what, handlers)` follows a run ({ run, token }) or every run
// ({ all: true }) and returns { close }; or null where the browser has no
// SharedWorker or Web Locks (or the worker cannot start), and the caller opens
// its own EventSource instead. Handlers: open() (the shared stream is following
// this subscription: read what came before it now), event(env, name),
// state(kind, detail) for "reconnecting" / "unavailable" (detail: seconds),
// refused(reason) ("forbidden" / "expired": this subscription is over), and
// fallback() (the worker is full or broken: use a stream of your own).

const TAB = crypto.randomUUID();
let connection; // undefined: not tried; null: not available
let nextId = 0;
const handlers = new Map(); // subscription id -> its handlers

function start() {
  if (typeof SharedWorker !== "function" || !navigator.locks) return null;
  let worker;
  try {
    worker = new SharedWorker("/static/hub.js", { type: "module", name: "steplog-streams" });
  } catch {
    return null;
  }
  const port = worker.port;
  // Held for as long as this tab lives: the worker waits on it to learn that the tab
  // died without saying goodbye. Messages wait until it is held.
  const held = new Promise((granted) => {
    navigator.locks.request(`steplog-tab-${TAB}`, () => {
      granted();
      return new Promise(() => {});
    });
  });
  const post = (message) => held.then(() => port.postMessage({ tab: TAB, ...message }));
  port.onmessage = ({ data }) => {
    const sub = handlers.get(data.id);
    if (!sub) return;
    if (data.type === "event") sub.event(data.env, data.name);
    else if (data.type === "open") sub.open();
    else if (data.type === "reconnecting") sub.state("reconnecting");
    else if (data.type === "unavailable") sub.state("unavailable", data.seconds);
    else if (data.type === "refused" || data.type === "fallback") {
      handlers.delete(data.id);
      if (data.type === "refused") sub.refused(data.reason);
      else sub.fallback();
    }
  };
  worker.onerror = () => {
    // The worker could not start (or died): every follower opens its own stream.
    connection = null;
    const orphans = [...handlers.values()];
    handlers.clear();
    for (const sub of orphans) sub.fallback();
  };
  port.start();
  addEventListener("pagehide", () => port.postMessage({ tab: TAB, type: "bye" }));
  return { post };
}

export function subscribe(what, subHandlers) {
  if (connection === undefined) connection = start();
  if (!connection) return null;
  const id = ++nextId;
  handlers.set(id, subHandlers);
  const { post } = connection;
  post({ type: "subscribe", id, run: what.run, token: what.token, all: Boolean(what.all) });
  return {
    close() {
      if (handlers.delete(id)) post({ type: "unsubscribe", id });
    },
  };
}
