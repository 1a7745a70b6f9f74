-- steplog SQLite schema, version 4: archive segments (storage/archive/).
-- archive_segments: one row per segment moved out of the live log, in position
-- order. Its last row is the archived prefix: positions 1..last_pos are in the
-- segments and the live log's first row links to last_hash (see
-- storage/archive/__init__.py for why the chain stays verifiable).
CREATE TABLE archive_segments (
    last_pos        INTEGER PRIMARY KEY,
    first_pos       INTEGER NOT NULL,
    prev_hash       TEXT    NOT NULL,
    last_hash       TEXT    NOT NULL,
    segment         TEXT    NOT NULL UNIQUE,
    directory       TEXT    NOT NULL,
    manifest_sha256 TEXT    NOT NULL,
    rows            INTEGER NOT NULL,
    runs            INTEGER NOT NULL,
    event_pos       INTEGER NOT NULL,
    created_at      TEXT    NOT NULL,
    CHECK (first_pos >= 1 AND last_pos >= first_pos)
);

-- Runs whose events are in a segment keep their record, marked with it.
ALTER TABLE runs ADD COLUMN archived_segment TEXT;

-- Append-only, with one exception: a row at or below the archived prefix, which a
-- verified segment already holds, may be deleted (only the archiver does it, in the
-- transaction that records the segment). Any other DELETE is refused, as before.
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN OLD.pos > (SELECT coalesce(max(last_pos), 0) FROM archive_segments)
BEGIN
    SELECT RAISE(ABORT, 'steplog events are append-only: DELETE refused');
END;

-- A segment record is history too: never changed, never removed.
CREATE TRIGGER archive_segments_no_update BEFORE UPDATE ON archive_segments
BEGIN
    SELECT RAISE(ABORT, 'steplog archive records are append-only: UPDATE refused');
END;

CREATE TRIGGER archive_segments_no_delete BEFORE DELETE ON archive_segments
BEGIN
    SELECT RAISE(ABORT, 'steplog archive records are append-only: DELETE refused');
END;
