"""The audit over HTTP and from the command line, against a real `steplog serve`.

The log is written by real runs on a real server, on SQLite and on PostgreSQL
(every test not about the SQLite file itself runs on both); the CLI runs as a
real subprocess (`python -m stream …`) reading the server's log directly, also
while the server keeps appending to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.audit import verify_log
from storage.audit.file import verify_export
from tests.support import postgres as testing
from tests.support.api import assert_problem, client, http_client, start_run, wait_for_status
from tests.support.launcher import ServerProcess, make_server
from tests.support.wait import wait_until


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.needs("postgres"))],
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server whose log holds eight finished ticker runs (about 2,000 events)."""
    url = None
    if request.param == "postgres":
        url = asyncio.run(testing.create_schema(testing.postgres_url_for_tests()))
    running = make_server(
        tmp_path_factory.mktemp("audit-http"), db=url, ping_interval=1, poll_interval=0.2
    ).start()
    try:
        runs = [start_run(running, count=250, interval_ms=0)["run_id"] for _ in range(8)]
        for run_id in runs:
            wait_for_status(running, run_id, "succeeded", timeout=60)
        yield running
    finally:
        running.stop()
        if url is not None:
            asyncio.run(testing.drop_schema(url))


def sqlite_only(server: ServerProcess) -> None:
    if server.db_url is not None:
        pytest.skip("about the SQLite file itself")


def steplog(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def db_head(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone()[0])
    finally:
        conn.close()


# -- HTTP ---------------------------------------------------------------------------------


def test_verify_over_http(server: ServerProcess) -> None:
    with client(server, auth=False) as http:
        assert_problem(http.get("/audit/verify"), 401)
    with client(server) as http:
        response = http.get("/audit/verify")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["ok"] is True and report["problems"] == []
        assert report["events"] == report["head"]["pos"] >= 2000
        assert report["summary"].startswith(f"ok: {report['events']} events, head pos ")

        checked = http.get("/audit/verify", params={"anchor": report["anchor"]})
        assert checked.json()["ok"] is True
        assert_problem(http.get("/audit/verify", params={"anchor": "pos=1"}), 400)
        future = f"steplog-anchor pos={10**9} hash={'a' * 64}"
        late = http.get("/audit/verify", params={"anchor": future}).json()
        assert late["ok"] is False and late["problems"][0]["kind"] == "truncated"


def test_export_over_http_is_streamed_and_verifies_offline(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    with client(server) as http, http.stream("GET", "/audit/export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/jsonl")
        assert "content-length" not in response.headers  # streamed, not built in memory
        assert response.headers.get("transfer-encoding") == "chunked"
        with out.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
    offline = verify_export(out)
    assert offline.ok, offline.lines()
    online = verify_log(server.database)
    assert offline.head_pos <= online.head_pos
    assert offline.events == offline.head_pos


def test_filtered_and_csv_exports_over_http(server: ServerProcess, tmp_path: Path) -> None:
    run_id = start_run(server, count=5, interval_ms=0)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    with client(server) as http:
        body = http.get("/audit/export", params={"run": run_id}).content
        (tmp_path / "run.jsonl").write_bytes(body)
        report = verify_export(tmp_path / "run.jsonl")
        assert report.ok and report.events == 10, report.lines()

        text = http.get("/audit/export", params=[("run", run_id), ("type", "step.progress")]).text
        events = [json.loads(line) for line in text.split("\n")[1:-2]]
        assert [e["seq"] for e in events] == [4, 5, 6, 7, 8]
        assert {e["type"] for e in events} == {"step.progress"}

        response = http.get("/audit/export", params={"run": run_id, "format": "csv"})
        assert response.headers["content-type"].startswith("text/csv")
        assert len(response.text.strip().splitlines()) == 11  # header + 10 events

        assert_problem(http.get("/audit/export", params={"type": "step.bogus"}), 400)
        assert_problem(http.get("/audit/export", params={"since": "last week"}), 400)
        assert_problem(http.get("/audit/export", params={"format": "xml"}), 400)
        assert_problem(http.get("/audit/export", params={"run": "0" * 28}), 404)
        assert_problem(http.get("/audit/export", params={"function": "a\x00b"}), 400)
    with client(server, auth=False) as http:
        assert_problem(http.get("/audit/export"), 401)


# -- the CLI ------------------------------------------------------------------------------


def test_cli_verify_anchor_export_and_offline_verify(server: ServerProcess, tmp_path: Path) -> None:
    verified = steplog("audit", "verify", "--db", server.database)
    assert verified.returncode == 0, verified.stderr
    assert re.fullmatch(r"ok: \d+ events, head pos \d+ hash [0-9a-f]{64}\n", verified.stdout)

    anchored = steplog("audit", "anchor", "--db", server.database)
    assert anchored.returncode == 0, anchored.stderr
    line = anchored.stdout.strip()
    assert line.startswith("steplog-anchor pos=")
    (tmp_path / "anchor.txt").write_text(line + "\n")

    out = tmp_path / "export.jsonl"
    exported = steplog("audit", "export", "--db", server.database, "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    offline = steplog("audit", "verify", "--file", str(out), "--anchor", line)
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert offline.stdout.startswith("ok: ")
    again = steplog(
        "audit", "verify", "--db", server.database, "--anchor", str(tmp_path / "anchor.txt")
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_cli_names_the_tampering_and_exits_non_zero(server: ServerProcess, tmp_path: Path) -> None:
    sqlite_only(server)  # every tampering case runs on both backends in tests/sqlite/test_audit.py
    copy = tmp_path / "copy.db"
    source, target = sqlite3.connect(server.db), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    pos = db_head(copy) // 2
    target.execute("DROP TRIGGER events_no_delete")
    target.execute("DELETE FROM events WHERE pos = ?", (pos,))
    target.commit()
    target.close()
    result = steplog("audit", "verify", "--db", str(copy))
    assert result.returncode == 1
    assert result.stdout.startswith(f"FAIL pos {pos}: missing: ")
    assert "log: triggers: append-only trigger events_no_delete is missing" in result.stdout

    as_json = json.loads(steplog("audit", "verify", "--db", str(copy), "--json").stdout)
    assert as_json["ok"] is False
    assert [p["kind"] for p in as_json["problems"]] == ["missing", "triggers"]

    missing = steplog("audit", "verify", "--db", str(tmp_path / "absent.db"))
    assert missing.returncode == 2 and "no SQLite log" in missing.stderr


def _fingerprint(db: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (db, db.with_name(db.name + "-wal"))
        if path.exists()
    }


def test_verify_on_a_live_log_succeeds_and_writes_nothing(server: ServerProcess) -> None:
    sqlite_only(server)  # PostgreSQL: tests/sqlite/test_audit.py verifies while a writer appends
    # Idle server, database open: the verifier changes not one byte and commits nothing.
    observer = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True, isolation_level=None)
    try:
        version = observer.execute("PRAGMA data_version").fetchone()[0]
        before = _fingerprint(server.db)
        assert steplog("audit", "verify", "--db", server.database).returncode == 0
        assert _fingerprint(server.db) == before
        assert observer.execute("PRAGMA data_version").fetchone()[0] == version
    finally:
        observer.close()

    # Busy server: a run keeps appending while verifications run against the same file.
    run_id = start_run(server, count=1_000_000, interval_ms=0)["run_id"]
    try:
        wait_until(lambda: db_head(server.db) > 0, what="the run to start writing")
        overlapped = 0

        def verify_while_writing() -> bool:
            nonlocal overlapped
            head_before = db_head(server.db)
            result = steplog("audit", "verify", "--db", server.database)
            head_after = db_head(server.db)
            assert result.returncode == 0, result.stdout + result.stderr
            match = re.fullmatch(
                r"ok: (\d+) events, head pos (\d+) hash [0-9a-f]{64}\n", result.stdout
            )
            assert match is not None, result.stdout
            events, head = int(match.group(1)), int(match.group(2))
            assert events == head and head_before <= head <= head_after
            overlapped += head_after > head_before
            return overlapped >= 2

        wait_until(verify_while_writing, 90, what="two verifications during appends")
    finally:
        with client(server) as http:
            http.post(f"/runs/{run_id}/cancel")
        wait_for_status(server, run_id, "cancelled")
    assert steplog("audit", "verify", "--db", server.database).returncode == 0


def test_runs_show_prints_the_timeline_and_runs_still_lists(server: ServerProcess) -> None:
    run_id = start_run(server, count=3, interval_ms=0)["run_id"]
    wait_for_status(server, run_id, "succeeded")
    shown = steplog("runs", "show", run_id, "--db", server.database, "--url", server.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"run {run_id} · ticker · succeeded · attempt 1 of ")
    step = next(line for line in lines if " tick " in line)
    assert "completed (3 events)" in step and " ms" in step
    ended = lines.index("result:") - 1
    assert lines[ended].startswith("ended: succeeded at ")
    assert lines[ended + 1 : -1] == ["result:", "{", '  "ticks": 3', "}"]
    # Last, a fresh link to the run's page, signed with the log's token key: it works.
    link = re.fullmatch(r"view_url: (\S+)  \(valid until (\S+Z)\)", lines[-1])
    assert link is not None, lines[-1]
    assert link.group(1).startswith(f"{server.url}/runs/{run_id}?token=")
    with http_client() as http:
        opened = http.get(link.group(1), headers={"Accept": "application/json"})
    assert opened.status_code == 200 and opened.json()["id"] == run_id, opened.text

    shown_json = steplog(
        "runs", "show", run_id, "--db", server.database, "--json", "--url", "https://steplog.test/"
    )
    as_json = json.loads(shown_json.stdout)
    assert as_json["ended"]["type"] == "run succeeded"
    assert [e["name"] for e in as_json["entries"] if e["kind"] == "step"] == ["tick"]
    assert as_json["view_url"].startswith(f"https://steplog.test/runs/{run_id}?token=")
    assert as_json["token_expires_at"].endswith("Z")

    listed = steplog(
        "runs", "--url", server.url, "--db", server.database,
        env={"STEPLOG_API_KEY": server.api_key},
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout

    unknown = steplog("runs", "show", "0" * 28, "--db", server.database)
    assert unknown.returncode == 4 and "no run with id" in unknown.stderr


def test_log_copy_both_ways_keeps_the_chain(server: ServerProcess, tmp_path: Path) -> None:
    """The server's log copied to the other backend and back verifies with the same head."""
    original = steplog("audit", "anchor", "--db", server.database).stdout.strip()
    url = asyncio.run(testing.create_schema(testing.postgres_url_for_tests()))
    try:
        if server.db_url is None:  # SQLite → PostgreSQL → SQLite
            hops = [server.database, url, f"sqlite://{tmp_path / 'back.db'}"]
        else:  # PostgreSQL → SQLite → PostgreSQL
            hops = [server.database, str(tmp_path / "hop.db"), url]
        for source, target in itertools.pairwise(hops):
            done = steplog("log", "copy", "--from", source, "--to", target)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "chain verified on arrival" in done.stdout
            anchored = steplog("audit", "verify", "--db", target, "--anchor", original)
            assert anchored.returncode == 0, anchored.stdout + anchored.stderr
        again = steplog("log", "copy", "--from", hops[0], "--to", hops[1])
        assert again.returncode == 1 and "copy only into an empty log" in again.stderr
    finally:
        asyncio.run(testing.drop_schema(url))


def test_log_copy_never_writes_into_another_database(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    source = tmp_path / "source.db"
    made = steplog("migrate", "--db", str(source))
    assert made.returncode == 0, made.stderr
    refused = steplog("log", "copy", "--from", str(source), "--to", str(other))
    assert refused.returncode == 1 and "not a steplog log" in refused.stderr
    conn = sqlite3.connect(other)
    assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()
