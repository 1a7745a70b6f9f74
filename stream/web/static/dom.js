// Tiny DOM helpers. Text from runs (scraped pages!) is only ever set as text.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else if (key === "href") node.setAttribute("href", safeHref(String(value)));
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Only http(s) and same-site links; anything else (javascript:, data:) becomes inert. */
export function safeHref(value) {
  try {
    const url = new URL(value, location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : "#";
  } catch {
    return "#";
  }
}

export function setText(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = value === null || value === undefined ? "" : String(value);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** A duration for people: "850 ms", "12.3 s", "4 m 05 s", "2 h 03 m" (never wrapped mid-value). */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  const nb = "\u00a0";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}${nb}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}${nb}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}${nb}m${nb}${String(s % 60).padStart(2, "0")}${nb}s`;
  return `${Math.floor(s / 3600)}${nb}h${nb}${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}${nb}m`;
}

/** Time since the run began as a clock, "+0:12.345" (the log's first column). */
export function fmtOffset(ms) {
  const sign = ms < 0 ? "-" : "+";
  const abs = Math.abs(ms);
  const h = Math.floor(abs / 3_600_000);
  const m = Math.floor((abs % 3_600_000) / 60_000);
  const s = ((abs % 60_000) / 1000).toFixed(3).padStart(6, "0");
  return h ? `${sign}${h}:${String(m).padStart(2, "0")}:${s}` : `${sign}${m}:${s}`;
}

/** "3 min ago", "in 2 s": the relative half of a date shown as date + relative. */
export function fmtAgo(ms) {
  const s = Math.round(ms / 1000);
  if (Math.abs(s) < 45) return "just now";
  const units = [["day", 86400], ["h", 3600], ["min", 60]];
  for (const [name, size] of units) {
    if (Math.abs(s) >= size) {
      const n = Math.floor(Math.abs(s) / size);
      return `${n}\u00a0${name}${name === "day" && n > 1 ? "s" : ""} ago`;
    }
  }
  return "just now";
}
