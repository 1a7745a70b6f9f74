"""The `scrape` function end to end: real Chromium, real servers, the built-in demo site.

Runs are started the way users start them (a signed webhook, the API, the CLI)
and watched through the SSE stream; what the browser did is checked on the
demo site's side (its request log and its count of open pages), and what it
must not do is checked with a listener of our own that must see no connection.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from unidecode import unidecode

from tests.conftest import ServerFactory
from tests.support.api import (
    get_run,
    http_client,
    json_bytes,
    post_webhook,
    run_stream_url,
    wait_for_status,
)
from tests.support.launcher import ROOT, ServerProcess, free_port, make_server
from tests.support.sse import assert_contiguous, read_stream, until_terminal
from tests.support.wait import wait_until

AS_OF = "2026-01-01"
DEMO_DATA = json.loads((ROOT / "stream/demo/profiles.json").read_text(encoding="utf-8"))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DEMO_LOGIN = {"username": "demo", "password": "steplog-demo"}
PARAMS_LOGIN = {"username": "zoe.reader", "password": "correct-horse-battery-staple"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[ServerProcess]:
    """One server for the tests that need no crash: demo on, four in-process workers.

    It knows the demo login for `127.0.0.1:<port>` from `STEPLOG_SCRAPE_CREDENTIALS`,
    and may also fetch itself as `localhost:<port>`, where it has no login: that is
    how a test reaches the private profile without credentials.
    """
    port = free_port()
    server = make_server(
        tmp_path_factory.mktemp("scrape"),
        port=port,
        demo=1,
        chromium=chromium,
        poll_interval=0.2,
        ping_interval=1,
        scrape_credentials=json.dumps({f"127.0.0.1:{port}": DEMO_LOGIN}),
        scrape_allow_hosts=f"localhost:{port}",
    ).start()
    try:
        yield server
    finally:
        server.stop()


# --- helpers ------------------------------------------------------------------------------------


def start_scrape(server: ServerProcess, **params: Any) -> dict[str, Any]:
    """Start a scrape through the signed webhook, as the issue's sender would."""
    response = post_webhook(server, "scrape", json_bytes({"as_of": AS_OF, **params}))
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def events_of(server: ServerProcess, run_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every event of a run, read from its stream until the terminal one."""
    stream = read_stream(run_stream_url(server, run_id), headers=server.headers, timeout=timeout)
    assert stream.ended, "the stream did not end"
    envelopes = stream.envelopes
    assert_contiguous(envelopes)
    return envelopes


def demo_log(server: ServerProcess) -> dict[str, Any]:
    with http_client() as http:
        response = http.get(f"{server.url}/demo/_requests")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def fetches(server: ServerProcess, path: str, query: str | None = None) -> int:
    """How often the demo site served `path` (with exactly `query`, when given)."""
    return sum(
        1
        for r in demo_log(server)["requests"]
        if r["path"] == path and (query is None or r["query"] == query)
    )


def steps(events: list[dict[str, Any]], kind: str = "step.started") -> list[str]:
    return [e["step"] for e in events if e["type"] == kind]


def assert_pct_never_decreases(events: list[dict[str, Any]]) -> None:
    pcts = [e["pct"] for e in events if e["pct"] is not None]
    assert pcts == sorted(pcts), f"the percentage went down: {pcts}"


def month(value: str | None) -> str:
    return "Present" if value is None else f"{MONTHS[int(value[5:]) - 1]} {value[:4]}"


def ascii_of(text: str) -> str:
    return " ".join(unidecode(text).split())


def demo_profile(slug: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in DEMO_DATA["profiles"] if p["slug"] == slug)
    return found


def expected_experience(slug: str) -> list[dict[str, Any]]:
    """The demo data file's positions as the result must carry them, in page order."""
    return [
        {
            "title": job["title"],
            "company": job["company"],
            "company_ascii": ascii_of(job["company"]),
            "start": job["start"],
            "end": job["end"],
            "dates": f"{month(job['start'])} \u2013 {month(job['end'])}",
        }
        for job in demo_profile(slug)["experience"]
    ]


def expected_education(slug: str) -> list[dict[str, Any]]:
    return [
        {
            "school": unicodedata.normalize("NFC", school["school"]),
            "school_ascii": ascii_of(school["school"]),
            "degree": school["degree"],
            "start": school["start"],
            "end": school["end"],
        }
        for school in demo_profile(slug)["education"]
    ]


def assert_nothing_invisible(value: Any) -> None:
    """No control or format character anywhere, except line breaks and emoji joiners."""
    if isinstance(value, str):
        assert unicodedata.is_normalized("NFC", value), value
        for index, char in enumerate(value):
            category = unicodedata.category(char)
            if char == "\n" or (char == "\u200d" and 0 < index < len(value) - 1):
                continue
            assert category not in ("Cc", "Cf"), f"{char!r} left in {value!r}"
    elif isinstance(value, dict):
        for item in value.values():
            assert_nothing_invisible(item)
    elif isinstance(value, list):
        for item in value:
            assert_nothing_invisible(item)


# --- the whole scrape ---------------------------------------------------------------------------


def test_a_signed_webhook_scrapes_a_profile_step_by_step(demo: ServerProcess) -> None:
    url = f"{demo.url}/demo/in/zoe-arnaud"
    started = start_scrape(demo, url=url)

    stream = read_stream(demo.url + started["stream_url"], timeout=60)  # the run token suffices
    events = stream.envelopes
    assert_contiguous(events)
    assert stream.events[-1].event == "completed", events[-1]
    assert steps(events) == [
        "launch",
        "login",
        "navigate",
        "expand",
        "expand/profile",
        "expand/page-2",
        "extract",
        "sanitize",
        "analyze",
        "done",
    ]
    assert steps(events, "step.completed") == [
        "launch",
        "login",
        "navigate",
        "expand/profile",
        "expand/page-2",
        "expand",
        "extract",
        "sanitize",
        "analyze",
        "done",
    ]
    for event in events:
        if event["type"] == "step.started":
            assert event["message"] and event["message"][0].isupper(), event
    assert_pct_never_decreases(events)
    assert events[-1]["pct"] == 100
    login = next(e for e in events if e["type"] == "step.started" and e["step"] == "login")
    assert (
        login["message"]
        == f"Logging in to 127.0.0.1:{demo.port} (credentials from the environment)"
    )

    result = events[-1]["data"]["result"]
    assert result["recipe"] == "demo"
    assert result["pages"] == 2
    assert result["profile"] == {
        "name": "Zo\u00eb Arnaud",
        "name_ascii": "Zoe Arnaud",
        "headline": "Robotics lead \U0001f916 \u00b7 builds teams \U0001f469\u200d\U0001f4bb",
        "location": "Montr\u00e9al, Qu\u00e9bec, Canada",
        "location_ascii": "Montreal, Quebec, Canada",
        "about": "Je construis des robots qui trient le courrier.\n\n"
        "I build robots that sort mail; before that I wrote compilers in Python and Rust."
        " Ask me about ROS, Rust and Python.",
        "image": f"{demo.url}/demo/avatar/zoe-arnaud.svg",
        "experience": expected_experience("zoe-arnaud"),
        "education": expected_education("zoe-arnaud"),
        "skills": ["Python", "Rust", "ROS", "JavaScript", "Kubernetes", "Leadership"],
        "links": [
            {"label": "GitHub", "url": "https://example.org/zoe"},
            {"label": "Blog \u270d\ufe0f", "url": "https://example.org/zoe/blog"},
        ],
    }
    assert len(result["profile"]["experience"]) == 14  # 5 shown, 5 behind "see more", 4 on page 2
    # Each skill once on the card, merged as the analysis merges them; the spellings kept.
    assert result["raw"] == {
        "skills": ["Python", "python", "Rust", "ROS", "JS", "JavaScript", "k8s", "Kubernetes",
                   "Leadership"],
    }  # fmt: skip
    assert_nothing_invisible(result)
    analysis = result["analysis"]
    assert analysis["as_of"] == AS_OF
    assert analysis["skills"][:2] == [{"name": "Python", "count": 4}, {"name": "Rust", "count": 3}]
    assert analysis["seniority"]["level"] == "principal"
    assert get_run(demo, started["run_id"])["result"] == result

    # Each page was loaded once; the browser context is gone.
    assert fetches(demo, "/demo/in/zoe-arnaud") == 1
    assert fetches(demo, "/demo/in/zoe-arnaud/more", "offset=5") == 1
    assert fetches(demo, "/demo/in/zoe-arnaud/experience", "page=2") == 1
    wait_until(lambda: demo_log(demo)["open_pages"] == 0, 10, what="demo pages to close")


def test_the_cli_triggers_and_follows_a_scrape(demo: ServerProcess) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "trigger",
            "scrape",
            "-p",
            f"url={demo.url}/demo/in/ada-lovelace",
            "--follow",
            "--url",
            demo.url,
            "--db",
            str(demo.db),
        ],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in (
        "[launch] Launching browser",
        "[navigate] Opening",
        "[done] Done",
        "run.succeeded",
    ):
        assert line in done.stdout


# --- failures that retry, and failures that do not ----------------------------------------------


def test_a_page_that_fails_once_is_retried_and_succeeds(demo: ServerProcess) -> None:
    run_id = start_scrape(demo, url=f"{demo.url}/demo/in/ada-lovelace?fail_once=retry-me")["run_id"]
    events = events_of(demo, run_id)

    assert events[-1]["type"] == "run.succeeded", events[-1]
    failed = next(e for e in events if e["type"] == "step.failed")
    assert failed["step"] == "navigate" and "500 Internal Server Error" in failed["message"]
    retrying = next(e for e in events if e["type"] == "run.retrying")
    assert "500" in retrying["data"]["error"]
    assert events[-1]["attempt"] == 2
    assert events[-1]["data"]["result"]["profile"]["name"] == "Ada Lovelace"
    assert fetches(demo, "/demo/in/ada-lovelace", "fail_once=retry-me") == 2


def test_a_missing_page_fails_at_once(demo: ServerProcess) -> None:
    run_id = start_scrape(demo, url=f"{demo.url}/demo/in/nobody")["run_id"]
    events = events_of(demo, run_id)

    assert events[-1]["type"] == "run.failed", events[-1]
    assert "answered 404 Not Found: there is no page at that address" in events[-1]["message"]
    assert "run.retrying" not in {e["type"] for e in events}
    assert events[-1]["attempt"] == 1
    assert fetches(demo, "/demo/in/nobody") == 1


def test_a_page_behind_a_login_without_credentials_fails_clearly(demo: ServerProcess) -> None:
    url = f"http://localhost:{demo.port}/demo/in/zoe-arnaud"  # no login for this host
    run_id = start_scrape(demo, url=url)["run_id"]
    events = events_of(demo, run_id)

    assert events[-1]["type"] == "run.failed", events[-1]
    assert "is behind a login" in events[-1]["message"]
    assert "STEPLOG_SCRAPE_CREDENTIALS" in events[-1]["message"]
    assert "login" not in steps(events)
    assert "run.retrying" not in {e["type"] for e in events}


def test_a_slow_page_hits_the_step_time_limit(demo: ServerProcess) -> None:
    url = f"http://localhost:{demo.port}/demo/in/ada-lovelace?delay_ms=3000"  # no login here
    run_id = start_scrape(demo, url=url, step_timeout_s=1)["run_id"]
    events = events_of(demo, run_id)

    assert events[-1]["type"] == "run.failed", events[-1]
    assert "timed out after 1s" in events[-1]["message"]
    failures = [e for e in events if e["type"] == "step.failed"]
    assert all("timed out after 1s" in e["message"] for e in failures), failures
    assert [e["step"] for e in failures] == ["navigate"] * 3  # transient: all three attempts
    assert [e["attempt"] for e in failures] == [1, 2, 3]


# --- credentials --------------------------------------------------------------------------------


def assert_secret_nowhere(server: ServerProcess, run_id: str) -> dict[str, Any]:
    """The params' login appears in no event, no API answer and no server log line."""
    raw = read_stream(run_stream_url(server, run_id), headers=server.headers).raw.decode()
    with http_client(base_url=server.url, headers=server.headers) as http:
        one = http.get(f"/runs/{run_id}").text
        listed = http.get("/runs", params={"limit": 1000}).text
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    for place, text in (("events", raw), ("GET /runs/{id}", one), ("GET /runs", listed),
                        ("server log", log)):  # fmt: skip
        for secret in PARAMS_LOGIN.values():
            assert secret not in text, f"{secret!r} leaked into {place}"
    run = json.loads(one)
    assert run["params"]["credentials"] == {"username": "**********", "password": "**********"}
    return run


def test_credentials_in_params_never_reach_the_log_or_the_api(demo: ServerProcess) -> None:
    url = f"http://localhost:{demo.port}/demo/in/zoe-arnaud"
    run_id = start_scrape(demo, url=url, credentials=PARAMS_LOGIN)["run_id"]
    run = wait_for_status(demo, run_id, "succeeded", "failed", timeout=60)
    assert_secret_nowhere(demo, run_id)
    assert run["status"] in ("succeeded", "failed")


def test_credentials_in_params_log_in(demo: ServerProcess) -> None:
    url = f"http://localhost:{demo.port}/demo/in/zoe-arnaud"
    run_id = start_scrape(demo, url=url, credentials=PARAMS_LOGIN)["run_id"]
    events = events_of(demo, run_id)
    assert "login" in steps(events)
    assert events[-1]["type"] == "run.succeeded", events[-1]["message"]
    assert_secret_nowhere(demo, run_id)


def test_credentials_in_params_are_encrypted_at_rest(demo: ServerProcess) -> None:
    """The login reaches the site (the run logs in and gets the private profile), but
    the database never holds it in the clear: not the runs row read with sqlite3, not
    one byte of the files SQLite writes (the database, its WAL and shared memory)."""
    url = f"http://localhost:{demo.port}/demo/in/zoe-arnaud"
    run_id = start_scrape(demo, url=url, credentials=PARAMS_LOGIN)["run_id"]
    events = events_of(demo, run_id)
    assert events[-1]["type"] == "run.succeeded", events[-1]["message"]
    login = next(e for e in events if e["type"] == "step.started" and e["step"] == "login")
    assert login["message"] == f"Logging in to localhost:{demo.port} (credentials from the params)"
    assert events[-1]["data"]["result"]["profile"]["name"] == "Zo\u00eb Arnaud"  # behind the login

    conn = sqlite3.connect(f"file:{demo.db}?mode=ro", uri=True)
    try:
        (stored,) = conn.execute("SELECT params FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        conn.close()
    params = json.loads(stored)
    assert params["url"] == url and params["as_of"] == AS_OF  # the rest stays readable
    sealed = params["credentials"]
    assert set(sealed) == {"username", "password"}
    assert all(set(value) == {"$enc"} for value in sealed.values()), sealed
    # Sealed with the key `serve` keeps beside the database, and with nothing else.
    key = Fernet((demo.db.parent / "secret-key").read_text().strip().encode())
    opened = {
        name: json.loads(key.decrypt(value["$enc"].encode())) for name, value in sealed.items()
    }
    assert opened == PARAMS_LOGIN

    beside = demo.db.parent.iterdir()  # the log's files (not the doorbell's directory)
    files = [path for path in beside if path.is_file() and path.name.startswith(demo.db.name)]
    assert {path.name for path in files} >= {"steplog.db", "steplog.db-wal"}, files
    for path in files:
        data = path.read_bytes()
        for secret in PARAMS_LOGIN.values():
            for form in (secret.encode(), secret.encode("utf-16-le")):
                assert form not in data, f"{secret!r} is in {path.name}"
    assert_secret_nowhere(demo, run_id)


# --- cancel -------------------------------------------------------------------------------------


def test_cancelling_a_running_scrape_closes_its_browser_context(demo: ServerProcess) -> None:
    url = f"{demo.url}/demo/in/ngozi-nystrom?pages_delay_ms=30000"  # page 2 takes 30 s
    started = start_scrape(demo, url=url)
    run_id, token = started["run_id"], started["token"]

    def loading_page_2(events: list[Any], _parser: Any) -> bool:
        return any('"step":"expand/page-2"' in e.data.replace(" ", "") for e in events)

    read_stream(demo.url + started["stream_url"], until=loading_page_2, timeout=60)
    wait_until(
        lambda: fetches(demo, "/demo/in/ngozi-nystrom/experience") == 1,
        10,
        what="page 2 to be requested",
    )
    assert demo_log(demo)["open_pages"] >= 1  # the profile stays open while page 2 loads

    asked = time.monotonic()
    with http_client() as http:
        response = http.post(f"{demo.url}/runs/{run_id}/cancel", params={"token": token})
    assert response.status_code == 200, response.text
    events = events_of(demo, run_id)
    assert events[-1]["type"] == "run.cancelled"
    assert time.monotonic() - asked < 2

    # The browser context is closed: the demo page it held open is gone, and the worker says so.
    wait_until(lambda: demo_log(demo)["open_pages"] == 0, 5, what="the scraped page to close")
    closed = f"closed the browser context of run {run_id} attempt 1"
    line = wait_until(
        lambda: next((x for x in demo.log_path.read_text().splitlines() if closed in x), None),
        5,
        what="the worker to log the closed context",
    )
    assert line.endswith("(open browser contexts in this process: 0)"), line


# --- SSRF ---------------------------------------------------------------------------------------


class Trap:
    """TCP listeners on loopback (IPv4 and IPv6, one port) that count every connection."""

    def __init__(self) -> None:
        self.connections: list[str] = []
        self._sockets: list[socket.socket] = []
        first = socket.create_server(("127.0.0.1", 0))
        self.port: int = first.getsockname()[1]
        self._sockets.append(first)
        # Without IPv6 loopback the IPv6 cases are still refused, just not counted.
        with contextlib.suppress(OSError):
            self._sockets.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self._sockets
        ]
        for thread in self._threads:
            thread.start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(str(address))
            connection.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for listener in self._sockets:
            listener.close()


@pytest.fixture
def trap() -> Iterator[Trap]:
    listener = Trap()
    yield listener
    listener.close()


def test_targets_that_could_be_turned_against_us_are_refused(
    demo: ServerProcess, trap: Trap
) -> None:
    port = trap.port
    direct = {
        "http://127.0.0.1/": "loopback",
        "http://[::1]/": "loopback",
        "http://[::ffff:127.0.0.1]/": "loopback",
        "http://2130706433/": "loopback",
        "http://0x7f.1/": "loopback",
        "http://169.254.169.254/": "metadata",
        "http://10.0.0.1/": "private",
        f"http://127.0.0.1:{port}/": "loopback",
        f"http://[::1]:{port}/": "loopback",
        f"http://[::ffff:127.0.0.1]:{port}/": "loopback",
        f"http://2130706433:{port}/": "loopback",
        f"http://0x7f.1:{port}/": "loopback",
    }
    through_the_page = {
        f"{demo.url}/demo/traps/redirect?to=http://127.0.0.1:{port}/pwned": "loopback",
        f"{demo.url}/demo/traps/redirect?to=http://[::1]:{port}/pwned": "loopback",
        f"{demo.url}/demo/traps/redirect?to=http://0x7f.1:{port}/pwned": "loopback",
        f"{demo.url}/demo/traps/image?src=http://127.0.0.1:{port}/avatar.png": "loopback",
        f"{demo.url}/demo/in/moved-away": "private",  # redirects to 10.0.0.1
    }
    runs = {url: start_scrape(demo, url=url)["run_id"] for url in {**direct, **through_the_page}}

    for url, run_id in runs.items():
        events = events_of(demo, run_id)
        last = events[-1]
        assert last["type"] == "run.failed", (url, last)
        kind = {**direct, **through_the_page}[url]
        assert "TargetRefused: refused to fetch" in last["message"], (url, last["message"])
        assert kind in last["message"], (url, last["message"])
        assert last["attempt"] == 1 and "run.retrying" not in {e["type"] for e in events}
        if url in direct:
            assert steps(events) == [], "a refused URL must not even start the browser"
    assert trap.connections == [], "a refused target received a connection"
    # The allowed pages themselves were loaded: the browser was stopped at the next hop.
    assert fetches(demo, "/demo/traps/redirect") == 3
    assert fetches(demo, "/demo/traps/image") == 1
    assert fetches(demo, "/demo/in/moved-away") == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:text/html,x"])
def test_non_http_urls_are_refused_at_intake(demo: ServerProcess, url: str) -> None:
    response = post_webhook(demo, "scrape", json_bytes({"url": url}))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["loc"] == ["url"]
    assert "only http and https" in body["errors"][0]["msg"]


# --- a worker killed in the middle --------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (the Playwright driver and Chromium below a worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_worker(server: ServerProcess, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **server.env,
        "STEPLOG_POLL_INTERVAL": "0.1",
        "STEPLOG_SCRAPE_ALLOW_HOSTS": f"127.0.0.1:{server.port}",  # the demo, for this process
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "worker",
                "--db",
                str(server.db),
                "--concurrency",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_killed_worker_costs_a_retry_not_the_pages_already_scraped(
    server_factory: ServerFactory, tmp_path: Path, chromium: str
) -> None:
    server = server_factory(
        workers=0, demo=1, chromium=chromium, lease_seconds=2, poll_interval=0.1, ping_interval=1
    )
    slug = "ngozi-nystrom"  # 30 positions: the profile, then pages 2, 3 and 4
    first = start_worker(server, tmp_path / "worker-1.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        url = f"{server.url}/demo/in/{slug}?pages_delay_ms=1500"
        started = start_scrape(server, url=url)
        run_id = started["run_id"]

        def loading_page_3(events: list[Any], _parser: Any) -> bool:
            return any('"step":"expand/page-3"' in e.data.replace(" ", "") for e in events)

        before = read_stream(run_stream_url(server, run_id), headers=server.headers,
                             until=loading_page_3, timeout=60)  # fmt: skip
        browser_processes = descendants(first.pid)
        assert browser_processes, "the worker runs no browser"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        wait_until(
            lambda: not any(alive(pid) for pid in browser_processes),
            15,
            what="the dead worker's Chromium to exit",
        )

        second = start_worker(server, tmp_path / "worker-2.log")
        rest = read_stream(
            run_stream_url(server, run_id),
            headers={**server.headers, "Last-Event-ID": before.last_id},
            until=until_terminal,
            timeout=90,
        )
        # Resuming with Last-Event-ID: every event once, in order, nothing missing.
        resumed = before.envelopes + rest.envelopes
        assert_contiguous(resumed)
        assert resumed == events_of(server, run_id)
        assert resumed[-1]["type"] == "run.succeeded", resumed[-1]
        assert resumed[-1]["attempt"] == 2
        retrying = next(e for e in resumed if e["type"] == "run.retrying")
        assert retrying["data"]["reason"] == "lease expired"
        assert_pct_never_decreases(resumed)

        second_attempt = [e for e in resumed if e["attempt"] == 2]
        reused = [
            e["step"]
            for e in second_attempt
            if e["type"] == "step.completed" and e["data"].get("reused")
        ]
        assert reused == ["navigate", "expand/profile", "expand/page-2"]
        assert steps(second_attempt) == [
            "launch", "expand", "expand/page-3", "expand/page-4", "extract", "sanitize",
            "analyze", "done",
        ]  # fmt: skip

        # The demo site's log: what was completed was not fetched again.
        profile = f"/demo/in/{slug}"
        assert fetches(server, profile) == 1
        assert fetches(server, f"{profile}/more") == 1
        assert fetches(server, f"{profile}/education") == 1
        assert fetches(server, f"{profile}/experience", "page=2&delay_ms=1500") == 1
        assert fetches(server, f"{profile}/experience", "page=3&delay_ms=1500") in (1, 2)
        assert fetches(server, f"{profile}/experience", "page=4&delay_ms=1500") == 1

        result = resumed[-1]["data"]["result"]
        assert result["pages"] == 4
        assert result["profile"]["experience"] == expected_experience(slug)
        assert result["profile"]["name"] == "Ngozi Okafor-Nystr\u00f6m"
        assert result["profile"]["name_ascii"] == "Ngozi Okafor-Nystrom"
        wait_until(lambda: demo_log(server)["open_pages"] == 0, 10, what="demo pages to close")
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=20)


def test_the_demo_is_off_unless_asked_for(server_factory: ServerFactory) -> None:
    server = server_factory(workers=0, demo=0)
    with httpx.Client() as http:
        assert http.get(f"{server.url}/demo/in/ada-lovelace").status_code == 404
