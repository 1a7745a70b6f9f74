// The live log: every event as one line, windowed so a 100,000-event run stays
// responsive. Only the lines in view (plus a margin) exist in the DOM; the list's
// height stands for the rest. Lines are fixed-height, which is what lets a scroll
// position map straight to an event index without measuring anything.
//
// Auto-scroll follows the newest line until the reader scrolls up; then a "Jump to
// live" button brings it back. Filters (step, type, text) keep an index of matching
// events that grows as events arrive, so a filter costs one pass when it changes
// and nothing per event after that. That pass goes in slices (slices.js): typing
// in the filter over 100,000 events never freezes the page.
import { el, fmtOffset } from "./dom.js";
import { slicer } from "./slices.js";

export const ROW_PX = 26; // must match .logs li height in style.css
const MARGIN_ROWS = 20;
const CHUNK = 1000; // events tested between two looks at the clock

const ICONS = {
  "run.queued": "○",
  "run.started": "▶",
  "step.started": "▸",
  "step.progress": "↗",
  "step.completed": "✓",
  "step.failed": "✗",
  log: "≡",
  "run.retrying": "↻",
  "run.succeeded": "✔",
  "run.failed": "✖",
  "run.cancelled": "⊘",
};
export const TYPES = Object.keys(ICONS);

export function logView({ scroller, list, jump, stepFilter, typeFilter, textFilter, onPick, onCount }) {
  let events = [];
  let firstAt = 0;
  let shown = []; // indices into `events` that pass the filter
  let scanned = 0; // events[0..scanned) have been tested against the filter
  let follow = true;
  let lastTop = 0;
  let drawnFrom = -1;
  let drawnTo = -1;
  let drawnTotal = -1;
  let selected = null;
  let continuation = null; // the scan's next slice, when one is due
  const steps = new Set();

  /** The filter as it stands, read once per slice (not once per event). */
  function criteria() {
    return { step: stepFilter.value, type: typeFilter.value, text: textFilter.value.trim().toLowerCase() };
  }

  function matches(env, { step, type, text }) {
    if (step && env.step !== step) return false;
    if (type && env.type !== type) return false;
    if (text && !`${env.message ?? ""} ${env.step ?? ""} ${env.type}`.toLowerCase().includes(text)) return false;
    return true;
  }

  /** Test the events not tested yet, for one slice; the rest is continued in a later task. */
  function scan() {
    const slice = slicer();
    const wanted = criteria();
    while (scanned < events.length) {
      const end = Math.min(events.length, scanned + CHUNK);
      for (; scanned < end; scanned++) {
        const env = events[scanned];
        if (env.step && !steps.has(env.step)) {
          steps.add(env.step);
          stepFilter.append(el("option", { value: env.step, text: env.step }));
        }
        if (matches(env, wanted)) shown.push(scanned);
      }
      if (slice.due()) break;
    }
    if (scanned < events.length && continuation === null) {
      continuation = setTimeout(() => {
        continuation = null;
        scan();
        show();
      }, 0);
    }
  }

  function line(index) {
    const env = events[index];
    const at = Date.parse(env.at);
    const absolute = new Date(at);
    const pct = env.pct === null || env.pct === undefined ? "" : `${Math.round(env.pct)}%`;
    return el(
      "li",
      { "data-seq": env.seq, "data-type": env.type, class: env.seq === selected ? "selected" : null },
      el(
        "button",
        { type: "button", class: "line", "data-index": index, "aria-label": `event ${env.seq}: ${env.type} ${env.message ?? ""}` },
        el("time", { datetime: env.at, title: `${absolute.toLocaleString()} (${env.at})`, text: fmtOffset(at - firstAt) }),
        el("span", { class: "icon", "aria-hidden": "true", title: env.type, text: ICONS[env.type] || "•" }),
        el("span", { class: "lstep", text: env.step ?? "" }),
        el("span", { class: "lmsg", text: env.message || env.type }),
        el("span", { class: "lpct", text: pct }),
      ),
    );
  }

  /** Draw the lines in view; nothing is rebuilt when neither the window nor the total moved. */
  function draw(force = false) {
    const total = shown.length;
    const height = scroller.clientHeight || 400;
    const top = scroller.scrollTop;
    const from = Math.max(0, Math.floor(top / ROW_PX) - MARGIN_ROWS);
    const to = Math.min(total, Math.ceil((top + height) / ROW_PX) + MARGIN_ROWS);
    list.style.height = `${total * ROW_PX}px`;
    if (!force && from === drawnFrom && to === drawnTo && total === drawnTotal) return;
    const focused = document.activeElement?.closest?.("#logs li")?.dataset.seq;
    list.style.paddingTop = `${from * ROW_PX}px`;
    const rows = [];
    for (let i = from; i < to; i++) rows.push(line(shown[i]));
    list.replaceChildren(...rows);
    if (focused) list.querySelector(`li[data-seq="${focused}"] button`)?.focus({ preventScroll: true });
    drawnFrom = from;
    drawnTo = to;
    drawnTotal = total;
  }

  function toBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    lastTop = scroller.scrollTop;
  }

  function setFollow(value) {
    follow = value;
    jump.hidden = value;
    scroller.dataset.follow = value ? "on" : "off";
  }

  /** New events were applied (or the state was replaced): show them. */
  function update(state) {
    if (state.events !== events) {
      events = state.events;
      firstAt = state.firstAt ?? 0;
      shown = [];
      scanned = 0;
      drawnTotal = -1;
    }
    firstAt = state.firstAt ?? firstAt;
    scan();
    show();
  }

  /** The lines and counts as far as the scan has got. */
  function show() {
    list.style.height = `${shown.length * ROW_PX}px`;
    if (follow) toBottom();
    draw();
    onCount(shown.length, events.length);
  }

  function refilter() {
    shown = [];
    scanned = 0;
    drawnTotal = -1; // redraw even if the window and the count come out the same
    scan();
    show();
  }

  // Following stops only when the reader moves up (the page itself only ever scrolls
  // down, and a growing list never moves scrollTop up), and resumes at the bottom.
  scroller.addEventListener("scroll", () => {
    const top = scroller.scrollTop;
    const atBottom = top + scroller.clientHeight >= scroller.scrollHeight - ROW_PX;
    if (atBottom && !follow) setFollow(true);
    else if (!atBottom && follow && top < lastTop - 1) setFollow(false);
    lastTop = top;
    draw();
  });
  jump.addEventListener("click", () => {
    setFollow(true);
    toBottom();
    draw();
  });
  list.addEventListener("click", (event) => {
    const button = event.target.closest("button.line");
    if (!button) return;
    const env = events[Number(button.dataset.index)];
    selected = env.seq;
    for (const row of list.querySelectorAll("li.selected")) row.classList.remove("selected");
    button.parentElement.classList.add("selected");
    onPick(env);
  });
  for (const control of [stepFilter, typeFilter]) control.addEventListener("change", refilter);
  textFilter.addEventListener("input", refilter);
  for (const type of TYPES) typeFilter.append(el("option", { value: type, text: `${ICONS[type]} ${type}` }));
  setFollow(true);

  return { update, isFollowing: () => follow };
}
