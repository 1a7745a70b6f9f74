-- steplog SQLite schema, version 1.
-- events: the append-only log. pos is global commit order (AUTOINCREMENT: never
-- reused, even after the last row is gone); seq is per-run, contiguous from 1.
CREATE TABLE events (
    pos     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT    NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    type    TEXT    NOT NULL,
    step    TEXT,
    message TEXT,
    pct     REAL,
    data    TEXT    NOT NULL DEFAULT 'null',
    attempt INTEGER NOT NULL,
    at      TEXT    NOT NULL,
    hash    TEXT    NOT NULL,
    UNIQUE (run_id, seq)
);

-- Append-only, enforced by the database itself rather than by convention.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'steplog events are append-only: UPDATE refused');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'steplog events are append-only: DELETE refused');
END;

-- runs: a projection of the events (status, result) plus the lease.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    function         TEXT    NOT NULL,
    params           TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL DEFAULT 3,
    last_seq         INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT UNIQUE,
    lease_owner      TEXT,
    lease_expires_at REAL,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    result           TEXT,
    error            TEXT
);

CREATE INDEX runs_claimable ON runs (status, created_at);
CREATE INDEX runs_function ON runs (function, id);

-- Small per-log secrets (the key that signs run tokens).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
