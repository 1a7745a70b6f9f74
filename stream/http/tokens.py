"""Run tokens: who holds one may read one run, until the expiry it carries.

A token is `<expires>.<mac>`: the expiry in Unix seconds, in the clear so anyone
can tell when a link stops working, and an HMAC-SHA256 over the run id *and*
that expiry under the log's token key (the `meta` row `secret:run-token`), so
the expiry cannot be pushed back without the key. Nothing is stored per token:
tokens survive restarts and are the same on every instance sharing the log.

Revoking them all is rotating the key (`steplog tokens rotate`): every token
signed with the old one is then refused. The key is re-read from the log every
few seconds (`TokenKey`), so the instances that share the log notice by
themselves.

Tokens from before expiries existed (the bare MAC of the run id) are still
recognised, and answered as expired: they name a real run, so "ask for a new
link" is the useful answer, but they no longer open anything.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage import EventLog

KEY_NAME = "run-token"
"""The name of the log's secret that signs run tokens (`EventLog.secret`)."""
KEY_REFRESH_SECONDS = 5.0
"""How often a server re-reads the token key, so a rotation reaches it this fast."""
_MAX_EXPIRES = 10**12  # far beyond any TTL; bounds what a presented token may claim


class Verdict(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"
    """Tampered, for another run, signed with another key, or not a token at all."""


@dataclass(frozen=True, slots=True)
class RunToken:
    value: str
    expires_at: int
    """Unix seconds; the token is refused from this second on."""


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode("ascii")


def mint(key: bytes, run_id: str, expires_at: int) -> RunToken:
    """A token for `run_id` valid until `expires_at` (Unix seconds)."""
    mac = _mac(key, f"run-token.v2:{run_id}:{expires_at}")
    return RunToken(f"{expires_at}.{mac}", expires_at)


def mint_for(key: bytes, run_id: str, ttl: float, now: float) -> RunToken:
    """A token for `run_id` valid for `ttl` seconds from `now` (rounded up to a second)."""
    return mint(key, run_id, math.ceil(now + ttl))


def expiry(presented: str) -> int | None:
    """The expiry a token claims (unverified); None when it carries none."""
    head, dot, _ = presented.partition(".")
    if not dot or not head.isascii() or not head.isdigit() or len(head) > 13:
        return None
    return int(head)


def check(key: bytes, run_id: str, presented: str, now: float) -> Verdict:
    """Whether `presented` opens `run_id` at `now`: the MAC first, then the expiry.

    The MAC is compared in constant time before the expiry is looked at, so an
    altered expiry is `INVALID`, never `EXPIRED`.
    """
    expires_at = expiry(presented)
    if expires_at is None:
        if hmac.compare_digest(presented.encode(), _mac(key, f"run:{run_id}").encode()):
            return Verdict.EXPIRED  # a token from before expiries: it never expired by itself
        return Verdict.INVALID
    if expires_at > _MAX_EXPIRES:
        return Verdict.INVALID
    if not hmac.compare_digest(presented.encode(), mint(key, run_id, expires_at).value.encode()):
        return Verdict.INVALID
    return Verdict.VALID if now < expires_at else Verdict.EXPIRED


class TokenKey:
    """The log's current token key, re-read at most every `refresh` seconds.

    A server keeps it in memory (every request with a token needs it), but another
    process may rotate it (`steplog tokens rotate`); reading it again every few
    seconds makes the rotation reach every instance without a restart.
    """

    def __init__(
        self,
        events: EventLog,
        *,
        refresh: float = KEY_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.refresh = refresh
        self.clock = clock
        self._key: bytes | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        if self._key is not None and self.clock() - self._read_at < self.refresh:
            return self._key
        async with self._lock:  # one read however many requests arrive together
            if self._key is None or self.clock() - self._read_at >= self.refresh:
                self._key = await self.events.secret(KEY_NAME)
                self._read_at = self.clock()
        return self._key
