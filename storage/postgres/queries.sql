-- steplog's PostgreSQL queries, named by storage/sqlfiles.py (POSTGRES).
-- File format (procrastinate's):
--     -- query_name --
--     -- what it is for (any number of comment lines)
--     SQL with $1, $2… parameters

-- create_schema_version --
-- Bookkeeping for the numbered migrations beside this file.
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- migration_lock --
-- Two processes starting at once must not both apply a migration.
SELECT pg_advisory_xact_lock(hashtext('steplog.migrate:' || coalesce(current_schema(), '')));

-- schema_version --
-- The newest migration applied (0 when none).
SELECT coalesce(max(version), 0) FROM schema_version;

-- has_schema_version --
-- Whether steplog's tables exist in the schema search_path selects.
SELECT to_regclass('schema_version') IS NOT NULL;

-- record_migration --
INSERT INTO schema_version (version, name) VALUES ($1, $2);

-- append_lock_key --
-- The append lock's key: a fixed tag in the high 32 bits and the events table's
-- oid in the low ones, so two logs in one database (two schemas) do not share it.
SELECT (x'73746c67'::bigint << 32) | 'events'::regclass::oid::bigint;

-- current_schema --
-- Names this log's NOTIFY channel: NOTIFY is database-wide, a log is one schema.
SELECT coalesce(current_schema(), 'public');

-- append_lock --
-- Serialises every transaction that adds events, across all processes, so pos
-- order is commit order (see storage/postgres/log.py). Held until COMMIT/ROLLBACK.
SELECT pg_advisory_xact_lock($1);

-- begin_append --
-- READ COMMITTED, whatever the server's default: each statement must take a new
-- snapshot (see lock_for_append).
BEGIN ISOLATION LEVEL READ COMMITTED;

-- lock_for_append --
-- The append lock, then (fresh snapshot) the chain head and the per-run locks of
-- the runs the batch appends to: seq and fencing are decided from these locked
-- rows. A function so that it all takes one round trip (001_initial.sql).
SELECT pos, hash, id, attempt, status, last_seq FROM steplog_lock_for_append($1, $2::text[]);

-- lock_runs --
-- The per-run lock: seq and fencing are decided from these rows while they are
-- locked. Ordered by id so two lockers never wait on each other in a cycle.
SELECT id, attempt, status, last_seq FROM runs
 WHERE id = ANY($1::text[])
 ORDER BY id
   FOR UPDATE;

-- write_batch --
-- Everything a flush writes, in one statement: the new events, and each touched
-- run's last_seq, plus (for a run whose terminal event is among them, u.status
-- not NULL) its end: status, result, error, no lease. One UPDATE per run row:
-- two data-modifying CTEs must never touch the same row.
WITH inserted AS (
    INSERT INTO events (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::text[],
                         $6::text[], $7::double precision[], $8::text[], $9::integer[],
                         $10::text[], $11::text[])
)
UPDATE runs
   SET last_seq = u.last_seq,
       updated_at = $17,
       status = coalesce(u.status, runs.status),
       finished_at = CASE WHEN u.status IS NULL THEN runs.finished_at ELSE $17 END,
       result = CASE WHEN u.status IS NULL THEN runs.result ELSE u.result END,
       error = CASE WHEN u.status IS NULL THEN runs.error ELSE u.error END,
       lease_owner = CASE WHEN u.status IS NULL THEN runs.lease_owner END,
       lease_expires_at = CASE WHEN u.status IS NULL THEN runs.lease_expires_at END
  FROM unnest($12::text[], $13::integer[], $14::text[], $15::text[], $16::text[])
       AS u (id, last_seq, status, result, error)
 WHERE runs.id = u.id;

-- append_batch --
-- The short way for a group of plain appends (storage/postgres/cached.py): the whole
-- write transaction in one round trip, run outside BEGIN so it commits on its own.
-- Raises SQLSTATE SLSTA, having written nothing, unless the head ($3, $4) and each
-- run's (attempt, status, last_seq) in $6 are still what the writer numbered from.
SELECT steplog_append_batch($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7);

-- event_hash --
-- After a short-way statement lost its connection: did its first row commit?
SELECT hash FROM events WHERE pos = $1;

-- notify_and_commit --
-- The last round trip: the wake-up (delivered by PostgreSQL only if and when the
-- transaction commits; payload = new head pos) and the COMMIT. {channel} is made
-- of [a-z0-9_] only and {head} is an integer (see log.py).
SELECT pg_notify('{channel}', '{head}'); COMMIT;

-- commit --
-- A write transaction that added no events has nobody to wake.
COMMIT;

-- insert_run --
-- The new run's row, or nothing when the idempotency key is already taken.
INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,
                  idempotency_key, idempotency_fingerprint, created_at, updated_at)
VALUES ($1, $2, $3, 'queued', 0, $4, 0, $5, $6, $7, $7)
    ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, function, params, status, attempt, max_attempts, last_seq, created_at,
          updated_at, idempotency_key, lease_owner, lease_expires_at, started_at, finished_at,
          result, error, idempotency_fingerprint;

-- run_by_idempotency_key --
-- The run a key started: a replay gets it back, after its fingerprint is compared.
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs WHERE idempotency_key = $1;

-- claimable_run_for_update --
-- The oldest claimable run; rows another transaction holds are skipped, not waited for.
SELECT id, attempt, max_attempts, lease_owner, status FROM runs
 WHERE function = ANY($1::text[])
   AND ((status = 'queued' AND available_at <= $2)
     OR (status = 'running' AND lease_expires_at < $2))
 ORDER BY created_at, id
 LIMIT 1
   FOR UPDATE SKIP LOCKED;

-- lease_run --
-- Run after the claim's events are written, so the row it returns is the run as the
-- claim commits it: the claimer needs no read after the commit (which could fail and
-- leave the run leased to a claimer that never learnt of it).
UPDATE runs SET status = 'running', attempt = $2, lease_owner = $3, lease_expires_at = $4,
                started_at = coalesce(started_at, $5), updated_at = $5
 WHERE id = $1
RETURNING id, function, params, status, attempt, max_attempts, last_seq, created_at,
          updated_at, idempotency_key, lease_owner, lease_expires_at, started_at, finished_at,
          result, error, idempotency_fingerprint;

-- heartbeat --
UPDATE runs SET lease_expires_at = $4
 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'running';

-- release --
-- An expired lease is what makes a run claimable again: expire it now.
UPDATE runs SET lease_expires_at = 0, lease_owner = NULL
 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'running';

-- requeue_run --
UPDATE runs SET status = 'queued', available_at = $2, lease_owner = NULL,
                lease_expires_at = NULL, error = $3, updated_at = $4,
                max_attempts = max_attempts + $5
 WHERE id = $1;

-- insert_secret --
INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING;

-- replace_secret --
-- A rotation (`steplog tokens rotate`): the new value wins whatever was there.
INSERT INTO meta (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- get_secret --
SELECT value FROM meta WHERE key = $1;

-- probe_writable --
-- `check_writable` (`/readyz`): a tiny write that touches no run or event, taken
-- through the writer (and so the append lock) like an append. The value is the
-- batch's time, so the row also tells when the log last proved writable.
INSERT INTO meta (key, value) VALUES ('probe:writable', $1)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- run_counts --
-- Runs per status, read at every `/metrics` scrape (one aggregate, no write).
SELECT status, count(*) FROM runs GROUP BY status;

-- get_run --
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs WHERE id = $1;

-- list_runs --
-- Newest first; each filter is skipped when its parameter is NULL.
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs
 WHERE ($1::text IS NULL OR status = $1)
   AND ($2::text IS NULL OR function = $2)
   AND ($3::text IS NULL OR id < $3)
 ORDER BY id DESC
 LIMIT $4;

-- claimable --
-- The idle worker's cheap check, outside any write transaction.
SELECT EXISTS (
    SELECT 1 FROM runs
     WHERE function = ANY($1::text[])
       AND ((status = 'queued' AND available_at <= $2)
         OR (status = 'running' AND lease_expires_at < $2))
);

-- read_run --
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3;

-- read_all --
-- Safe to page by pos: pos order is commit order (see append_lock), so no
-- lower pos can still become visible after a higher one was read.
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE pos > $1 ORDER BY pos LIMIT $2;

-- head --
SELECT coalesce(max(pos), 0) FROM events;

-- count_rows --
-- How much a log already holds (`steplog log copy` only fills an empty one).
SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events);

-- grant_app_role --
-- `steplog migrate --app-role ROLE`: what the app needs, and no way to rewrite history.
-- {role} is a quoted identifier filled in by migrations.py.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT ON events TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM {role};
GRANT SELECT, INSERT, UPDATE ON runs, meta TO {role};
GRANT SELECT ON schema_version TO {role};
GRANT SELECT ON archive_segments TO {role};

-- grant_archiver_role --
-- `steplog migrate --archiver-role ROLE`: the app's grants plus what archiving needs, the
-- one role that may DELETE events (the trigger still limits it to archived positions).
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, DELETE ON events TO {role};
REVOKE UPDATE, TRUNCATE ON events FROM {role};
GRANT SELECT, INSERT, UPDATE ON runs, meta TO {role};
GRANT SELECT ON schema_version TO {role};
GRANT SELECT, INSERT ON archive_segments TO {role};

-- runs_out_of_step --
-- Runs whose last_seq disagrees with their events (`steplog log copy` checks none do).
SELECT count(*) FROM runs r
 WHERE r.last_seq <> (SELECT coalesce(max(e.seq), 0) FROM events e WHERE e.run_id = r.id);

-- current_schema_name --
-- The schema the grants of `--app-role` / `--archiver-role` name.
SELECT current_schema();

-- archive_allowed --
-- Whether this role may archive: DELETE on events, INSERT on archive_segments.
SELECT current_user, has_table_privilege('events', 'DELETE'),
       has_table_privilege('archive_segments', 'INSERT');

-- archive_prefix --
-- The archived prefix: where the newest segment ends, and how many there are.
SELECT last_pos, last_hash, (SELECT count(*) FROM archive_segments) FROM archive_segments
 ORDER BY last_pos DESC LIMIT 1;

-- archive_spans --
-- Each run with events in the window: its first pos, the pos of its last event (by
-- the run's last_seq) and of its seq 1, its status and end (storage/archive/plan.py).
SELECT f.run_id, f.first,
       (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = r.last_seq),
       (SELECT e.pos FROM events e WHERE e.run_id = f.run_id AND e.seq = 1),
       r.status, r.finished_at
  FROM (SELECT run_id, min(pos) AS first FROM events WHERE pos > $1 AND pos <= $2
         GROUP BY run_id) f
  LEFT JOIN runs r ON r.id = f.run_id
 ORDER BY f.first;

-- read_range --
-- Every live row from pos to pos (what the archiver writes into a segment).
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE pos BETWEEN $1 AND $2 ORDER BY pos;

-- archive_segments --
-- Columns in the order of `storage.archive.records.SegmentRecord`.
SELECT segment, directory, first_pos, last_pos, prev_hash, last_hash, manifest_sha256,
       rows, runs, event_pos, created_at
  FROM archive_segments ORDER BY last_pos;

-- run_segment --
-- The segment that holds an archived run.
SELECT segment, directory, first_pos, last_pos, prev_hash, last_hash, manifest_sha256,
       rows, runs, event_pos, created_at
  FROM archive_segments
 WHERE segment = (SELECT archived_segment FROM runs WHERE id = $1);

-- archive_range_check --
-- The rows a segment is about to remove: how many, and the hash of the last.
SELECT count(*), (SELECT hash FROM events WHERE pos = $2) FROM events
 WHERE pos BETWEEN $1 AND $2;

-- insert_archive_run --
-- The run that records a segment in the chained log (its events follow).
INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,
                  created_at, updated_at, started_at)
VALUES ($1, $2, '{}', 'running', 0, 1, 0, $3, $3, $3);

-- insert_segment --
INSERT INTO archive_segments (segment, directory, first_pos, last_pos, prev_hash, last_hash,
                              manifest_sha256, rows, runs, event_pos, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- mark_archived --
UPDATE runs SET archived_segment = $1 WHERE id = ANY($2::text[]);

-- delete_archived --
-- Allowed by the trigger (003_archive.sql) only for positions a recorded segment covers.
DELETE FROM events WHERE pos BETWEEN $1 AND $2;

-- savepoint --
-- One operation of a batch applied alone (storage/postgres/batch.py).
SAVEPOINT operation;

-- undo_savepoint --
-- The operation failed: its writes are undone, the transaction goes on (one round trip).
ROLLBACK TO SAVEPOINT operation; RELEASE SAVEPOINT operation;

-- release_savepoint --
RELEASE SAVEPOINT operation;
