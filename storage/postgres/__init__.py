"""The PostgreSQL event log (asyncpg): one log shared by many processes and machines.

`log.py` explains how appends are ordered so the global stream never skips a
late commit; `notify.py` how other processes are woken; the SQL is in
`queries.sql` and the numbered migrations beside it.
"""
