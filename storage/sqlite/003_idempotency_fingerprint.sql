-- steplog SQLite schema, version 3: idempotency fingerprints.
-- A keyed run keeps a hash of its params (storage/writer/idempotency.py), so that the same
-- key with other params is refused instead of answered with this run. Runs keyed
-- before this version keep NULL: only their function is compared.
ALTER TABLE runs ADD COLUMN idempotency_fingerprint TEXT;
