"""Enough file descriptors for the streams a server is allowed to hold.

Every open stream is a socket, and so a file descriptor. Linux starts processes
with a soft limit of 1,024 descriptors (systemd's default too), while
`STEPLOG_MAX_STREAMS` allows 10,000 streams: without this, the 1,021st client
would make `accept` fail with "Too many open files", a failure that reaches the
client as a refused or reset connection, not as the 429 the cap promises. Raising
the soft limit up to the hard one needs no privilege, as nginx does with
`worker_rlimit_nofile`; when even the hard limit is too low, the start-up log
says what to raise.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("steplog.serve")

SPARE = 256
"""Descriptors beyond the streams: the log's files, the workers' browsers, requests."""


def raise_for(max_streams: int) -> int:
    """Lift the soft descriptor limit towards `max_streams + SPARE`; return the limit now."""
    wanted = max_streams + SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open-file limit is %d, below STEPLOG_MAX_STREAMS (%d) plus %d: raise it"
            " (ulimit -n, or LimitNOFILE= in a systemd unit) or lower STEPLOG_MAX_STREAMS",
            soft,
            max_streams,
            SPARE,
        )
    return int(soft)
