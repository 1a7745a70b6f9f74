-- steplog PostgreSQL schema, version 1 (the SQLite schema's versions 1 and 2 in one).
--
-- events: the append-only log. pos is the global commit order: it is assigned by
-- the writer as head + 1 while holding the append lock (see storage/postgres/log.py),
-- never by a sequence, so pos order is commit order and there are no gaps. seq is
-- per run, contiguous from 1. data and at are text: the hash chain covers exactly
-- these bytes, so they are never normalised (jsonb would reorder keys).
CREATE TABLE runs (
    id               text PRIMARY KEY,
    function         text             NOT NULL,
    params           text             NOT NULL,
    status           text             NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempt          integer          NOT NULL DEFAULT 0,
    max_attempts     integer          NOT NULL DEFAULT 3,
    last_seq         integer          NOT NULL DEFAULT 0,
    idempotency_key  text UNIQUE,
    lease_owner      text,
    lease_expires_at double precision,
    available_at     double precision NOT NULL DEFAULT 0,
    created_at       text             NOT NULL,
    updated_at       text             NOT NULL,
    started_at       text,
    finished_at      text,
    result           text,
    error            text
);

CREATE INDEX runs_claimable ON runs (status, created_at);
CREATE INDEX runs_function ON runs (function, id);

CREATE TABLE events (
    pos     bigint  PRIMARY KEY CHECK (pos >= 1),
    run_id  text    NOT NULL REFERENCES runs (id),
    seq     integer NOT NULL CHECK (seq >= 1),
    type    text    NOT NULL,
    step    text,
    message text,
    pct     double precision,
    data    text    NOT NULL DEFAULT 'null',
    attempt integer NOT NULL,
    at      text    NOT NULL,
    hash    text    NOT NULL,
    UNIQUE (run_id, seq)
);

-- Append-only, enforced by the database itself rather than by convention. A
-- role without UPDATE/DELETE/TRUNCATE grants (`steplog migrate --app-role`) is
-- the second fence: the trigger stops mistakes, the grants stop the app role.
CREATE FUNCTION steplog_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'steplog events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION steplog_events_append_only();

CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION steplog_events_append_only();

-- The first step of every write transaction, in one round trip (each round trip
-- under the append lock is time every process waits): take the append lock, then
-- read the chain head and lock the runs the batch appends to. Must be VOLATILE:
-- a volatile function takes a fresh snapshot for each statement inside it, so in
-- READ COMMITTED the SELECT below sees every transaction that committed before
-- the lock was granted (see storage/postgres/log.py for why that matters). One
-- row per locked run, or one row with a NULL id; pos is NULL for an empty log.
CREATE FUNCTION steplog_lock_for_append(lock_key bigint, run_ids text[])
RETURNS TABLE (pos bigint, hash text, id text, attempt integer, status text, last_seq integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY
    WITH head AS (
        SELECT e.pos, e.hash FROM events e ORDER BY e.pos DESC LIMIT 1
    ), locked AS (
        SELECT r.id, r.attempt, r.status, r.last_seq FROM runs r
         WHERE r.id = ANY(run_ids)
         ORDER BY r.id
           FOR UPDATE
    )
    SELECT head.pos, head.hash, locked.id, locked.attempt, locked.status, locked.last_seq
      FROM (SELECT) AS one
      LEFT JOIN head ON true
      LEFT JOIN locked ON true;
END;
$$;

-- Small per-log secrets (the key that signs run tokens).
CREATE TABLE meta (
    key   text  PRIMARY KEY,
    value bytea NOT NULL
);
