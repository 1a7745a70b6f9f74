-- steplog PostgreSQL schema, version 4: a batch of appends in one statement.
--
-- The writer keeps the chain head and the state of the runs it last wrote
-- (storage/postgres/cached.py). For a group of plain appends it numbers, chains
-- and hashes the events in Python against that cache and sends them all in one
-- call of this function, run as a transaction of its own: one round trip under
-- the append lock instead of four (BEGIN, lock, write, COMMIT). The function
-- takes the append lock, then checks the cache against the database: the head
-- (pos and hash) and, row by row, each run's attempt, status and last_seq. If
-- anything differs (another process wrote meanwhile), it raises SQLSTATE SLSTA
-- before a row is written and the writer does the batch the long way
-- (steplog_lock_for_append, then write_batch). So the cache can make an append
-- faster, never different: pos, seq, fencing and hashes are decided from the
-- same values as in the long way, which the database has just confirmed.
--
-- VOLATILE, and refused outside READ COMMITTED, for the reason given at
-- steplog_lock_for_append (001_initial.sql): the head is read with a snapshot
-- taken after the lock was granted. NOTIFY is delivered only if and when the
-- transaction commits, as in the long way.
-- The rows come as two JSON arrays of arrays, one per row, in column order (the
-- events in `Event`'s field order, the runs as listed in the UPDATE below): one
-- text parameter each, which costs the writer far less to encode than a dozen
-- arrays, and the text of every string reaches its column exactly as sent.
CREATE FUNCTION steplog_append_batch(
    lock_key bigint, channel text, expected_pos bigint, expected_hash text,
    new_events jsonb, touched_runs jsonb, now text
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head_pos bigint;
    head_hash text;
    matched integer;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'steplog_append_batch needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.pos, e.hash INTO head_pos, head_hash FROM events e ORDER BY e.pos DESC LIMIT 1;
    IF coalesce(head_pos, 0) <> expected_pos
       OR (head_pos IS NOT NULL AND head_hash <> expected_hash) THEN
        RAISE EXCEPTION 'steplog: the chain head moved' USING ERRCODE = 'SLSTA';
    END IF;
    -- The check and the projection in one statement: a run is updated only when it
    -- is still as the writer numbered it (and is then locked until commit).
    UPDATE runs
       SET last_seq = u.last_seq,
           updated_at = now,
           status = coalesce(u.end_status, runs.status),
           finished_at = CASE WHEN u.end_status IS NULL THEN runs.finished_at ELSE now END,
           result = CASE WHEN u.end_status IS NULL THEN runs.result ELSE u.result END,
           error = CASE WHEN u.end_status IS NULL THEN runs.error ELSE u.error END,
           lease_owner = CASE WHEN u.end_status IS NULL THEN runs.lease_owner END,
           lease_expires_at = CASE WHEN u.end_status IS NULL THEN runs.lease_expires_at END
      FROM (SELECT r->>0 AS id, (r->>1)::integer AS attempt, r->>2 AS status,
                   (r->>3)::integer AS from_seq, (r->>4)::integer AS last_seq,
                   r->>5 AS end_status, r->>6 AS result, r->>7 AS error
              FROM jsonb_array_elements(touched_runs) AS r) AS u
     WHERE runs.id = u.id
       AND runs.attempt = u.attempt
       AND runs.status = u.status
       AND runs.last_seq = u.from_seq;
    GET DIAGNOSTICS matched = ROW_COUNT;
    IF matched <> jsonb_array_length(touched_runs) THEN
        RAISE EXCEPTION 'steplog: a run changed' USING ERRCODE = 'SLSTA';
    END IF;
    INSERT INTO events (pos, run_id, seq, type, step, message, pct, data, attempt, at, hash)
    SELECT (e->>0)::bigint, e->>1, (e->>2)::integer, e->>3, e->>4, e->>5,
           (e->>6)::double precision, e->>7, (e->>8)::integer, e->>9, e->>10
      FROM jsonb_array_elements(new_events) AS e;
    PERFORM pg_notify(channel, new_events->-1->>0);
END;
$$;
