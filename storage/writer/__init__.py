"""The write side shared by both backends: what a write request is, how it is checked
before it is queued, and the single writer that applies queued requests in groups.

`writes.py` defines the requests, `validate.py` refuses values no transaction
could store before they are queued, `idempotency.py` fingerprints a keyed
run's params, `queued.py` is the queue with the typed `Operations` protocol
each backend's `operations.py` satisfies, and `commits.py` takes everything
queued and commits it as one group. The backends (storage/sqlite/,
storage/postgres/) supply only how each request is applied inside a batch.
"""
