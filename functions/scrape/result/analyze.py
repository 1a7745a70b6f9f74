"""The default analyzer: deterministic and local, so a retry gets the same answer.

It normalises and counts skills, sums the years of experience (overlapping jobs
counted once), estimates seniority from those years and the latest title, and
lists the top keywords of the "about" text. An analyzer is any plain function
`(profile, as_of) -> dict` (sync or async); `STEPLOG_SCRAPE_ANALYZER=module:function`
swaps in another one, for example one that asks an LLM.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

from functions.errors import PermanentError
from functions.scrape.result.dates import as_month, month_index

ANALYZER_ENV = "STEPLOG_SCRAPE_ANALYZER"
DEFAULT_ANALYZER = "functions.scrape.result.analyze:analyze"
TOP_KEYWORDS = 10

Analyzer = Callable[[dict[str, Any], date], Any]

SKILL_ALIASES = {
    "js": "JavaScript",
    "javascript": "JavaScript",
    "ecmascript": "JavaScript",
    "ts": "TypeScript",
    "typescript": "TypeScript",
    "py": "Python",
    "python": "Python",
    "python3": "Python",
    "golang": "Go",
    "k8s": "Kubernetes",
    "kubernetes": "Kubernetes",
    "postgres": "PostgreSQL",
    "postgresql": "PostgreSQL",
    "psql": "PostgreSQL",
    "ml": "Machine learning",
    "machine learning": "Machine learning",
    "ai": "AI",
    "c++": "C++",
    "cpp": "C++",
    "c#": "C#",
    "csharp": "C#",
    "node": "Node.js",
    "nodejs": "Node.js",
    "node.js": "Node.js",
    "react.js": "React",
    "reactjs": "React",
    "aws": "AWS",
    "gcp": "Google Cloud",
    "sql": "SQL",
}

SENIORITY = (
    (1.0, "entry"),
    (3.0, "junior"),
    (6.0, "mid"),
    (10.0, "senior"),
    (float("inf"), "principal"),
)
LEADERSHIP = re.compile(
    r"\b(lead|leader|head|principal|staff|director|vp|vice president|chief|cto|ceo|founder"
    r"|co-founder|manager|architect)\b",
    re.IGNORECASE,
)

# English, and the commonest French, Spanish and German ones.
_STOPWORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself
yourselves i'm i've it's we're they're don't can't won't one two many much every via
like get got make made using use used work worked working year years new
des les une est pour dans avec sur que qui par pas ces aux
los las del con por para una que
der die das und mit für von ist ein eine
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
APOSTROPHE = "\u2019"
_WORD = re.compile(r"[^\W_][\w'\u2019-]*[^\W_]|[^\W_\d]", re.UNICODE)


def normalise_skill(raw: str) -> str:
    """One spelling per skill: aliases resolved, whitespace and trailing dots dropped."""
    text = " ".join(raw.split()).strip(" .,;:")
    return SKILL_ALIASES.get(text.casefold(), text)


def count_skills(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Each listed skill once, counted by how often the profile mentions it.

    A skill counts once per listing (aliases merge: "JS" and "JavaScript" are two
    listings of one skill) and once per mention in the about text and in each
    experience entry's title and company.
    """
    names: dict[str, str] = {}
    listed: Counter[str] = Counter()
    spellings: dict[str, set[str]] = {}
    for raw in profile.get("skills") or []:
        if not isinstance(raw, str) or not raw.strip():
            continue
        name = normalise_skill(raw)
        key = name.casefold()
        names.setdefault(key, name)
        listed[key] += 1
        spellings.setdefault(key, {key}).add(" ".join(raw.split()).casefold())
    for alias, canonical in SKILL_ALIASES.items():
        if canonical.casefold() in spellings:
            spellings[canonical.casefold()].add(alias)
    texts = [profile.get("about") or ""]
    for job in profile.get("experience") or []:
        texts.append(" ".join(str(job.get(k) or "") for k in ("title", "company")))
    counts: list[dict[str, Any]] = []
    for key, name in names.items():
        pattern = re.compile(
            r"(?<![\w+#.])(?:"
            + "|".join(re.escape(s) for s in sorted(spellings[key], key=len, reverse=True))
            + r")(?![\w+#])",
            re.IGNORECASE,
        )
        mentions = sum(len(pattern.findall(text.casefold())) for text in texts)
        counts.append({"name": name, "count": listed[key] + mentions})
    counts.sort(key=lambda item: (-item["count"], item["name"].casefold()))
    return counts


def experience_months(profile: dict[str, Any], as_of: date) -> int:
    """Months covered by at least one job (overlaps counted once; open jobs end at as_of)."""
    now = month_index(as_month(as_of)) + 1
    spans: list[tuple[int, int]] = []
    for job in profile.get("experience") or []:
        start = job.get("start")
        if not start:
            continue
        end = job.get("end")
        first = month_index(start)
        last = min(month_index(end) + 1, now) if end else now
        if last > first:
            spans.append((first, last))
    total = 0
    current: tuple[int, int] | None = None
    for first, last in sorted(spans):
        if current is None or first > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (first, last)
        else:
            current = (current[0], max(current[1], last))
    if current is not None:
        total += current[1] - current[0]
    return total


def seniority(years: float, profile: dict[str, Any]) -> dict[str, Any]:
    """A level from the years, one level up when the latest title says leadership."""
    levels = [name for _limit, name in SENIORITY]
    index = next(i for i, (limit, _name) in enumerate(SENIORITY) if years < limit)
    signals = [f"{years:g} years of experience"]
    latest = _latest_job(profile)
    title = (latest or {}).get("title") or ""
    if match := LEADERSHIP.search(title):
        signals.append(f"latest title {title!r} mentions {match[0].lower()!r}")
        index = min(index + 1, len(levels) - 1) if index >= 2 else index
    return {"level": levels[index], "signals": signals}


def _latest_job(profile: dict[str, Any]) -> dict[str, Any] | None:
    jobs = [j for j in profile.get("experience") or [] if j.get("start")]
    if not jobs:
        return None
    return max(jobs, key=lambda j: (j.get("end") is None, j.get("end") or "", j["start"]))


def keywords(text: str, top: int = TOP_KEYWORDS) -> list[dict[str, Any]]:
    """The most frequent words of `text` (stopwords, numbers and 1-2 letter words left out)."""
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for index, match in enumerate(_WORD.finditer(text)):
        word = match[0].casefold().replace(APOSTROPHE, "'")
        if word in STOPWORDS or word.isdigit() or (len(word) < 3 and word.isascii()):
            continue
        counts[word] += 1
        first_seen.setdefault(word, index)
    ranked = sorted(counts, key=lambda w: (-counts[w], first_seen[w]))
    return [{"word": word, "count": counts[word]} for word in ranked[:top]]


def analyze(profile: dict[str, Any], as_of: date) -> dict[str, Any]:
    """The default analysis of a sanitized profile, as of a given day."""
    months = experience_months(profile, as_of)
    years = round(months / 12, 1)
    return {
        "skills": count_skills(profile),
        "experience_years": years,
        "seniority": seniority(years, profile),
        "keywords": keywords(profile.get("about") or ""),
        "as_of": as_of.isoformat(),
    }


def analyzer_name(env: dict[str, str] | None = None) -> str:
    return (os.environ if env is None else env).get(ANALYZER_ENV, "").strip() or DEFAULT_ANALYZER


def load_analyzer(spec: str) -> Analyzer:
    """Import `module:function`; a bad setting fails the run, clearly and without retries."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PermanentError(f"{ANALYZER_ENV}={spec!r} must look like 'module:function'")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise PermanentError(f"{ANALYZER_ENV}={spec!r} could not be loaded: {exc}") from None
    if not callable(found):
        raise PermanentError(f"{ANALYZER_ENV}={spec!r} is not a function")
    analyzer: Analyzer = found
    return analyzer


async def run_analyzer(spec: str, profile: dict[str, Any], as_of: date) -> dict[str, Any]:
    """Call the analyzer; a sync one runs in a thread so a slow call blocks no other run."""
    analyzer = load_analyzer(spec)
    if inspect.iscoroutinefunction(analyzer):
        result = await analyzer(profile, as_of)
    else:
        result = await asyncio.to_thread(analyzer, profile, as_of)
    if not isinstance(result, dict):
        raise PermanentError(f"the analyzer {spec} returned {type(result).__name__}, not a dict")
    return result
