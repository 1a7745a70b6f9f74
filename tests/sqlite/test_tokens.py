"""Run tokens: the expiry they carry, the MAC over it, and the key a server re-reads.

Time is passed in (`now`), so expiry is tested at any instant without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from storage import open_log
from stream.http.tokens import TokenKey, Verdict, check, expiry, mint, mint_for

KEY = secrets.token_bytes(32)
RUN = "0190f0c0a0b0c0d0e0f000112233"
NOW = 1_800_000_000.0


def test_a_token_opens_its_run_until_its_expiry_and_not_from_then_on() -> None:
    token = mint_for(KEY, RUN, ttl=60, now=NOW)
    assert token.expires_at == NOW + 60
    assert expiry(token.value) == token.expires_at
    assert check(KEY, RUN, token.value, NOW) is Verdict.VALID
    assert check(KEY, RUN, token.value, NOW + 59.999) is Verdict.VALID
    assert check(KEY, RUN, token.value, NOW + 60) is Verdict.EXPIRED
    assert check(KEY, RUN, token.value, NOW + 10**6) is Verdict.EXPIRED


def test_a_ttl_that_is_not_whole_seconds_rounds_the_expiry_up() -> None:
    assert mint_for(KEY, RUN, ttl=0.25, now=NOW + 0.5).expires_at == NOW + 1


def test_the_mac_covers_the_expiry_so_it_cannot_be_pushed_back() -> None:
    token = mint(KEY, RUN, int(NOW) - 1)  # expired
    _, _, mac = token.value.partition(".")
    for later in (int(NOW) + 3600, 10**12, 10**13 - 1):
        assert check(KEY, RUN, f"{later}.{mac}", NOW) is Verdict.INVALID


def test_a_token_for_another_run_or_under_another_key_is_invalid_not_expired() -> None:
    token = mint(KEY, RUN, int(NOW) - 1)
    assert check(KEY, RUN[:-1] + "4", token.value, NOW) is Verdict.INVALID
    assert check(secrets.token_bytes(32), RUN, token.value, NOW) is Verdict.INVALID


def test_a_token_from_before_expiries_is_answered_as_expired() -> None:
    """The bare MAC of the run id, as tokens were: it names the run, but opens nothing now."""
    legacy = base64.urlsafe_b64encode(
        hmac.new(KEY, f"run:{RUN}".encode(), hashlib.sha256).digest()[:24]
    ).decode()
    assert check(KEY, RUN, legacy, NOW) is Verdict.EXPIRED
    assert check(secrets.token_bytes(32), RUN, legacy, NOW) is Verdict.INVALID


@given(st.text(max_size=80))
def test_anything_else_is_invalid(presented: str) -> None:
    assert check(KEY, RUN, presented, NOW) is Verdict.INVALID


async def test_a_rotated_key_is_picked_up_within_the_refresh_interval(tmp_path: Path) -> None:
    """`TokenKey` caches the log's key but reads it again once `refresh` has passed."""
    now = [0.0]
    log = open_log(str(tmp_path / "steplog.db"))
    await log.open()
    try:
        keys = TokenKey(log, refresh=5.0, clock=lambda: now[0])
        first = await keys.get()
        assert first == await log.secret("run-token")
        rotated = await log.rotate_secret("run-token")
        assert rotated != first and await log.secret("run-token") == rotated
        now[0] = 4.9
        assert await keys.get() == first  # cached: one read per interval, not per request
        now[0] = 5.0
        assert await keys.get() == rotated
    finally:
        await log.close()
