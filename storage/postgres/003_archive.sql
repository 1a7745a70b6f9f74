-- steplog PostgreSQL schema, version 3: archive segments (storage/archive/).
-- The same records as SQLite's 004_archive.sql; see storage/archive/__init__.py.
CREATE TABLE archive_segments (
    last_pos        bigint  PRIMARY KEY,
    first_pos       bigint  NOT NULL,
    prev_hash       text    NOT NULL,
    last_hash       text    NOT NULL,
    segment         text    NOT NULL UNIQUE,
    directory       text    NOT NULL,
    manifest_sha256 text    NOT NULL,
    rows            integer NOT NULL,
    runs            integer NOT NULL,
    event_pos       bigint  NOT NULL,
    created_at      text    NOT NULL,
    CHECK (first_pos >= 1 AND last_pos >= first_pos)
);

ALTER TABLE runs ADD COLUMN archived_segment text;

-- Append-only, with one exception: DELETE of a row at or below the archived prefix
-- (a recorded, verified segment holds it). Only the archiver deletes, in the same
-- transaction that records the segment; a role without DELETE on events (the app
-- role of `steplog migrate --app-role`) cannot even try. UPDATE and TRUNCATE stay
-- refused for everyone.
CREATE OR REPLACE FUNCTION steplog_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.pos <= (SELECT coalesce(max(last_pos), 0) FROM archive_segments) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'steplog events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- A segment record is history too: never changed, never removed.
CREATE FUNCTION steplog_archive_records_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'steplog archive records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER archive_segments_append_only BEFORE UPDATE OR DELETE ON archive_segments
    FOR EACH ROW EXECUTE FUNCTION steplog_archive_records_append_only();
