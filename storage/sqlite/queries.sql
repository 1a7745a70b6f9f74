-- steplog's SQLite queries, named by storage/sqlfiles.py (SQLITE).
-- File format (procrastinate's):
--     -- query_name --
--     -- what it is for (any number of comment lines)
--     SQL with ? parameters
-- A {name} in a statement is filled in by the module that names it, only ever with
-- a run of `?` ({marks}) or fixed text of that module ({where}); never with values.
-- PRAGMAs stay in the Python beside the connection they tune.

-- begin_immediate --
-- A write transaction that takes SQLite's write lock at once (group commit, log copy).
BEGIN IMMEDIATE;

-- begin_read --
-- One read snapshot (the audit): deferred, so it never takes the write lock.
BEGIN;

-- commit --
COMMIT;

-- rollback --
ROLLBACK;

-- savepoint --
-- One operation of a batch applied alone (storage/sqlite/batch.py).
SAVEPOINT operation;

-- rollback_to_savepoint --
ROLLBACK TO operation;

-- release_savepoint --
RELEASE operation;

-- table_names --
-- Whether a file is a steplog log: it has `events` and `runs`.
SELECT name FROM sqlite_master;

-- has_table --
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?;

-- assigned_high --
-- AUTOINCREMENT's high-water mark: the highest pos ever assigned (the chain head's
-- pos, even after rows at the end were deleted).
SELECT seq FROM sqlite_sequence WHERE name = 'events';

-- head_hash --
SELECT hash FROM events ORDER BY pos DESC LIMIT 1;

-- head --
SELECT coalesce(max(pos), 0) FROM events;

-- load_runs --
-- The states the batch numbers appends against; {marks} is one ? per run id (≤ 500).
SELECT id, attempt, status, last_seq FROM runs WHERE id IN ({marks});

-- insert_events --
INSERT INTO events (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- run_progressed --
UPDATE runs SET last_seq = ?, updated_at = ? WHERE id = ?;

-- run_ended --
-- A run whose terminal event was just written: its end, and no lease.
UPDATE runs SET status = ?, finished_at = ?, result = ?, error = ?,
                lease_owner = NULL, lease_expires_at = NULL
 WHERE id = ?;

-- run_by_idempotency_key --
-- The run a key started: a replay gets it back, after its fingerprint is compared.
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs WHERE idempotency_key = ?;

-- insert_run --
INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,
                  idempotency_key, idempotency_fingerprint, created_at, updated_at)
VALUES (?, ?, ?, 'queued', 0, ?, 0, ?, ?, ?, ?)
RETURNING id, function, params, status, attempt, max_attempts, last_seq, created_at,
          updated_at, idempotency_key, lease_owner, lease_expires_at, started_at, finished_at,
          result, error, idempotency_fingerprint;

-- claimable_run --
-- The oldest claimable run of the functions ({marks}: one ? each), then now twice.
SELECT id, attempt, max_attempts, lease_owner, status FROM runs
 WHERE function IN ({marks})
   AND ((status = 'queued' AND available_at <= ?)
     OR (status = 'running' AND lease_expires_at < ?))
 ORDER BY created_at, id
 LIMIT 1;

-- lease_run --
-- Run after the claim's events are written, so the row it returns is the run as the
-- claim commits it.
UPDATE runs SET status = 'running', attempt = ?, lease_owner = ?, lease_expires_at = ?,
                started_at = coalesce(started_at, ?), updated_at = ?
 WHERE id = ?
RETURNING id, function, params, status, attempt, max_attempts, last_seq, created_at,
          updated_at, idempotency_key, lease_owner, lease_expires_at, started_at, finished_at,
          result, error, idempotency_fingerprint;

-- heartbeat --
UPDATE runs SET lease_expires_at = ?
 WHERE id = ? AND attempt = ? AND lease_owner = ? AND status = 'running';

-- release --
-- An expired lease is what makes a run claimable again: expire it now.
UPDATE runs SET lease_expires_at = 0, lease_owner = NULL
 WHERE id = ? AND attempt = ? AND lease_owner = ? AND status = 'running';

-- requeue_run --
UPDATE runs SET status = 'queued', available_at = ?, lease_owner = NULL,
                lease_expires_at = NULL, error = ?, updated_at = ?,
                max_attempts = max_attempts + ?
 WHERE id = ?;

-- extend_leases --
-- After a full disk: the outage (seconds) added to every lease alive when it began.
UPDATE runs SET lease_expires_at = lease_expires_at + ?
 WHERE status = 'running' AND lease_expires_at > ?;

-- probe_writable --
-- `check_writable` (`/readyz`): a tiny committed write that touches no run or event.
INSERT INTO meta (key, value) VALUES ('probe:writable', ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- insert_secret --
INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING;

-- replace_secret --
-- A rotation (`steplog tokens rotate`): the new value wins whatever was there.
INSERT INTO meta (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- get_secret --
SELECT value FROM meta WHERE key = ?;

-- run_counts --
SELECT status, count(*) FROM runs GROUP BY status;

-- get_run --
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs WHERE id = ?;

-- list_runs --
-- Newest first. {where} is empty or `WHERE` and some of `status = ?`, `function = ?`,
-- `id < ?` (storage/sqlite/log.py): written out per call rather than as
-- `(? IS NULL OR …)`, which SQLite would plan as a scan past the runs_function index.
SELECT id, function, params, status, attempt, max_attempts, last_seq, created_at, updated_at,
       idempotency_key, lease_owner, lease_expires_at, started_at, finished_at, result, error,
       idempotency_fingerprint
  FROM runs {where}
 ORDER BY id DESC
 LIMIT ?;

-- claimable --
-- The idle worker's cheap check, outside any write transaction ({marks}: one ? per
-- function, then now twice).
SELECT 1 FROM runs
 WHERE function IN ({marks})
   AND ((status = 'queued' AND available_at <= ?)
     OR (status = 'running' AND lease_expires_at < ?))
 LIMIT 1;

-- read_run --
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?;

-- read_run_envelopes --
-- The envelope of `storage.envelope`, built by SQLite while it steps the rows
-- (`data` is stored JSON text), so a replay costs the event loop one string per event.
SELECT seq, type, '{"run_id":' || json_quote(run_id) || ',"seq":' || seq
       || ',"type":' || json_quote(type) || ',"step":' || json_quote(step)
       || ',"message":' || json_quote(message) || ',"pct":' || coalesce(pct, 'null')
       || ',"data":' || data || ',"attempt":' || attempt || ',"at":' || json_quote(at)
       || '}'
  FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?;

-- read_all --
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE pos > ? ORDER BY pos LIMIT ?;

-- read_range --
-- Every live row from pos to pos (the archiver's exact path).
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE pos BETWEEN ? AND ? ORDER BY pos;

-- count_rows --
-- How much a log already holds (`steplog log copy` only fills an empty one).
SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM events);

-- copy_runs --
-- `steplog log copy`: the columns of `storage.copy.RUN_COLUMNS`, in that order.
INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,
                  idempotency_key, lease_owner, lease_expires_at, available_at, created_at,
                  updated_at, started_at, finished_at, result, error, idempotency_fingerprint)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- runs_out_of_step --
-- Runs whose last_seq disagrees with their events (`steplog log copy` checks none do).
SELECT count(*) FROM runs r
 WHERE r.last_seq <> (SELECT coalesce(max(e.seq), 0) FROM events e WHERE e.run_id = r.id);

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
  FROM (SELECT run_id, min(pos) AS first FROM events WHERE pos > ? AND pos <= ?
         GROUP BY run_id) f
  LEFT JOIN runs r ON r.id = f.run_id
 ORDER BY f.first;

-- archive_fast_rows --
-- The archiver's fast path (storage/sqlite/archive_rows.py): SQLite writes the JSON.
SELECT run_id, seq, pct, hash,
       CAST(json_array(pos, run_id, seq, type, step, message) AS BLOB),
       CAST(json_array(data, attempt, at) AS BLOB)
  FROM events WHERE pos BETWEEN ? AND ? ORDER BY pos;

-- archive_range_ends --
-- `at` of the first and of the last row of a range.
SELECT (SELECT at FROM events WHERE pos = ?), (SELECT at FROM events WHERE pos = ?);

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
 WHERE segment = (SELECT archived_segment FROM runs WHERE id = ?);

-- archive_range_check --
-- The rows a segment is about to remove: how many, and the hash of the last (first,
-- last, last as parameters).
SELECT count(*), (SELECT hash FROM events WHERE pos = ?) FROM events
 WHERE pos BETWEEN ? AND ?;

-- insert_archive_run --
-- The run that records a segment in the chained log (its events follow).
INSERT INTO runs (id, function, params, status, attempt, max_attempts, last_seq,
                  created_at, updated_at, started_at)
VALUES (?, ?, '{}', 'running', 0, 1, 0, ?, ?, ?);

-- insert_segment --
INSERT INTO archive_segments (segment, directory, first_pos, last_pos, prev_hash, last_hash,
                              manifest_sha256, rows, runs, event_pos, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- mark_archived --
UPDATE runs SET archived_segment = ? WHERE id = ?;

-- delete_archived --
-- Allowed by the events_no_delete trigger only for positions a recorded segment covers.
DELETE FROM events WHERE pos BETWEEN ? AND ?;

-- audit_fast_rows --
-- The audit's fast rows: the canonical text `storage.chain` hashes, written by SQLite
-- (see storage/audit/sqlite.py), and the hash. A rounding tie of pct gets no text
-- (X''), so Python checks that row exactly.
SELECT CASE WHEN pct IS NOT NULL AND pct * 200 = round(pct * 200)
                 AND pct * 100 != round(pct * 100)
            THEN X''
            ELSE CAST(json_array('steplog.v1', pos, run_id, seq, type, step, message,
                                 CASE WHEN pct IS NULL THEN NULL ELSE printf('%.2f', pct) END,
                                 data, attempt, at) AS BLOB)
       END,
       hash
  FROM events WHERE pos >= ? ORDER BY pos;

-- audit_full_rows --
-- Full rows from pos on, past the rows already handed out (a BLOB SQLite cannot put
-- in JSON: Python encodes the rest).
SELECT pos, run_id, seq, type, step, message, pct, data, attempt, at, hash
  FROM events WHERE pos >= ? ORDER BY pos LIMIT -1 OFFSET ?;

-- triggers --
SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger';

-- vacuum --
-- `steplog log archive --vacuum`: rewrite the file at its size after archiving (it
-- holds the write lock while it copies the live log; an operator's choice).
VACUUM;
