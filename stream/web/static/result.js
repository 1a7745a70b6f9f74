// The run's result, shown rather than hidden: a profile card for a scrape (skills
// once each, merged the way the analysis merges them), a readable JSON tree for
// anything else. Scraped text is only ever set as text.
import { el } from "./dom.js";

function text(value) {
  return typeof value === "string" ? value : value === null || value === undefined ? "" : JSON.stringify(value);
}

/** Skills once each: the analysis's merged list when there is one (aliases already
 * folded, with how often each is mentioned), else the listed ones without repeats. */
export function skills(result, profile) {
  const merged = result?.analysis?.skills;
  if (Array.isArray(merged) && merged.length) {
    return merged.map((skill) => (typeof skill === "object" && skill ? { name: text(skill.name), count: skill.count } : { name: text(skill) }));
  }
  const seen = new Map();
  for (const raw of Array.isArray(profile?.skills) ? profile.skills : []) {
    const name = text(raw).split(/\s+/).join(" ").replace(/^[ .,;:]+|[ .,;:]+$/g, "");
    if (name && !seen.has(name.toLowerCase())) seen.set(name.toLowerCase(), { name });
  }
  return [...seen.values()];
}

export function profileCard(result) {
  if (!result || typeof result !== "object" || !result.profile || typeof result.profile !== "object") return null;
  const profile = result.profile;
  const parts = [];
  if (profile.name) {
    const ascii = profile.name_ascii && profile.name_ascii !== profile.name ? ` (${text(profile.name_ascii)})` : "";
    parts.push(el("h3", { class: "name", text: `${text(profile.name)}${ascii}` }));
  }
  if (profile.headline) parts.push(el("p", { class: "headline", text: text(profile.headline) }));
  if (profile.location) parts.push(el("p", { class: "location", text: text(profile.location) }));
  const analysis = result.analysis && typeof result.analysis === "object" ? result.analysis : null;
  if (analysis) {
    const facts = [];
    const level = analysis.seniority && typeof analysis.seniority === "object" ? analysis.seniority.level : analysis.seniority;
    if (level) facts.push(`seniority: ${text(level)}`);
    if (typeof analysis.experience_years === "number") facts.push(`${analysis.experience_years} years of experience`);
    if (facts.length) parts.push(el("p", { class: "analysis", text: facts.join(" · ") }));
  }
  if (profile.about) parts.push(el("p", { class: "about", text: text(profile.about) }));
  if (Array.isArray(profile.experience) && profile.experience.length) {
    parts.push(el("h4", { text: "Experience" }));
    const jobs = profile.experience.map((job) => {
      const what = [job?.title, job?.company].filter(Boolean).map(text).join(" · ");
      const when = job?.dates || (job?.start ? [job.start, job.end || "now"].map(text).join("–") : "");
      return el("li", {}, what, when ? el("span", { class: "muted", text: ` (${text(when)})` }) : null);
    });
    parts.push(el("ul", { class: "experience" }, ...jobs));
  }
  const list = skills(result, profile);
  if (list.length) {
    parts.push(el("h4", { text: "Skills" }));
    const items = list.map((skill) => el("li", { title: skill.count ? `mentioned ${skill.count}×` : null, text: skill.name }));
    parts.push(el("ul", { class: "skills" }, ...items));
  }
  if (analysis && Array.isArray(analysis.keywords) && analysis.keywords.length) {
    const words = analysis.keywords.slice(0, 8).map((k) => (k && typeof k === "object" ? text(k.word) : text(k)));
    parts.push(el("p", { class: "keywords muted", text: `keywords: ${words.join(", ")}` }));
  }
  return parts;
}

const OPEN_LEVELS = 2;
const MAX_ITEMS = 200; // a huge array shows its first items and says how many more

/** A JSON value as nested <details>: objects and arrays fold, leaves are text. */
export function jsonTree(value, key = null, depth = 0) {
  const label = key === null ? null : el("span", { class: "jkey", text: `${key}: ` });
  if (value === null || typeof value !== "object") {
    const kind = value === null ? "null" : typeof value;
    return el("div", { class: "jleaf" }, label, el("span", { class: `j${kind}`, text: JSON.stringify(value) ?? "" }));
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
  const summary = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
  const children = entries.slice(0, MAX_ITEMS).map(([k, v]) => jsonTree(v, k, depth + 1));
  if (entries.length > MAX_ITEMS) children.push(el("div", { class: "muted", text: `… ${entries.length - MAX_ITEMS} more` }));
  const node = el("details", { class: "jnode" }, el("summary", {}, label, el("span", { class: "muted", text: summary })), ...children);
  node.open = depth < OPEN_LEVELS;
  return node;
}
