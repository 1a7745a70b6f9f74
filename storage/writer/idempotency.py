"""Idempotency keys: what is kept with a key, and when a request under it is a replay.

A key names one request. A request arriving again under the same key with the
same function and the same params is a replay (the sender retrying): it gets the
run the key started, and nothing is written. The same key with another function
or other params is a different request reusing the key, which is refused with
`IdempotencyConflict` rather than answered with a run doing something else.

To tell the two apart without keeping a second copy of the params (they may hold
login credentials), each keyed run stores a fingerprint: a SHA-256 of its params'
canonical JSON (sorted keys, no whitespace), computed by `fingerprint` from the
params as `create_run` receives them, before a backend stores (or encrypts) them.
The function is compared as stored in the run itself.

Runs keyed before fingerprints existed have none (the upgrade cannot compute one
in SQL, and re-reading stored params would break once they are stored encrypted):
for them only the function is compared, so a replay to the same function returns
the run whatever its params, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from storage.errors import IdempotencyConflict
from storage.jsonenc import canonical

ALGORITHM = "sha256"
"""Named in every stored fingerprint, so another algorithm could later be told apart."""

_WITH_NAN = json.JSONEncoder(
    ensure_ascii=False, default=str, separators=(",", ":"), sort_keys=True, allow_nan=True
)


def fingerprint(params: dict[str, Any], *, key: bytes | None = None) -> str:
    """`sha256:<hex>` of the params' canonical JSON: equal for equal params, whatever
    their key order, and revealing nothing of them.

    With `key` (params holding a secret: the caller derives it from the key secrets
    are sealed with), `hmac-sha256:<hex>` instead: a plain hash of a login would let
    anyone holding a copy of the database test guesses at the password.
    """
    try:
        text = canonical(params)
    except ValueError:  # NaN or infinity, which the stored params keep: the same text less strict
        text = _WITH_NAN.encode(params)
    data = text.encode("utf-8")
    if key is not None:
        return f"hmac-{ALGORITHM}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def check_replay(
    key: str,
    function: str,
    params_fingerprint: str | None,
    stored_function: str,
    stored_fingerprint: str | None,
) -> None:
    """Raise `IdempotencyConflict` unless the request is a replay of the keyed run."""
    if function != stored_function:
        raise IdempotencyConflict(key, "function", function, stored_function)
    if stored_fingerprint is not None and params_fingerprint != stored_fingerprint:
        raise IdempotencyConflict(key, "params", function, stored_function)
