-- steplog SQLite schema, version 2: scheduled retries.
-- A run that failed in a way that can pass goes back to 'queued' with
-- available_at in the future (back-off); claims skip it until then.
ALTER TABLE runs ADD COLUMN available_at REAL NOT NULL DEFAULT 0;
