"""Several processes opening a new SQLite file at once (`serve --processes N`): the
switch to WAL and the migrations.

Each reads the schema version before taking the write lock; the one that waited for
the lock must read it again under the lock and find the schema done, not apply the
migrations a second time (`table … already exists`).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from storage.sqlite import migrations
from storage.sqlite.dbfile import use_wal

DEADLINE = 10.0


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def test_a_process_that_waited_for_the_lock_finds_the_schema_done(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    first, second = connect(path), connect(path)
    latest = migrations.available()[-1][0]
    # The first process holds the write lock, migrating.
    first.execute("BEGIN IMMEDIATE")
    for _number, sql in migrations.available():
        for statement in migrations.statements(sql):
            first.execute(statement)
    first.execute(f"PRAGMA user_version = {latest}")

    # The second has read version 0 (the first has not committed) and asks for the lock.
    asking = threading.Event()
    second.set_trace_callback(lambda sql: asking.set() if sql == "BEGIN IMMEDIATE" else None)
    result: list[int | BaseException] = []

    def migrate_second() -> None:
        try:
            result.append(migrations.migrate(second))
        except BaseException as exc:  # reported by the assertion below
            result.append(exc)

    thread = threading.Thread(target=migrate_second)
    thread.start()
    assert asking.wait(DEADLINE), "the second process never asked for the write lock"
    first.execute("COMMIT")
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert result == [latest]
    (version,) = second.execute("PRAGMA user_version").fetchone()
    assert version == latest
    first.close()
    second.close()


def test_statements_keep_a_triggers_body_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER t_no_update BEFORE UPDATE ON t
    BEGIN
        SELECT RAISE(ABORT, 'no; never');
    END;
    """
    found = migrations.statements(script)
    assert len(found) == 2
    assert found[1].strip().startswith("CREATE TRIGGER") and found[1].rstrip().endswith("END;")


def test_opening_waits_for_another_process_switching_a_new_file_to_wal(tmp_path: Path) -> None:
    """SQLite answers the switch to WAL with "database is locked" at once (no busy
    wait) while another connection holds the write lock on a rollback-journal file:
    the opening process tries again instead of failing its start-up."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE early(x)")
    other.execute("BEGIN IMMEDIATE")  # another process, mid-write, still in rollback mode
    other.execute("INSERT INTO early VALUES (1)")

    opening = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    opening.execute("PRAGMA busy_timeout = 10000")
    attempts = threading.Semaphore(0)
    opening.set_trace_callback(lambda sql: attempts.release() if "journal_mode" in sql else None)
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            use_wal(opening)
            outcome.append(None)
        except BaseException as exc:  # reported by the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=open_it)
    thread.start()
    # A second attempt means the first was refused and the opener did not give up.
    assert attempts.acquire(timeout=DEADLINE) and attempts.acquire(timeout=DEADLINE), outcome
    other.execute("COMMIT")
    thread.join(DEADLINE)
    assert outcome == [None]
    assert opening.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
