"""Secrets in stored params: sealed with Fernet at intake, opened by the worker only.

A run's params are kept in the runs table so any worker, in any process, can
run it (also as a retry after a crash). Most of them should stay readable there
(the URL, the limits: what an auditor wants to see), but a login must not sit in
the database, its backups and its dumps in plain text. So each *secret* value is
replaced, in place, by `{"$enc": "<Fernet token>"}`; the rest is stored as is.

Which values are secret is what the function's params model already says: a
value is secret when its public dump (what the API shows: `SecretStr` and the
scrape `Credentials` mask themselves) differs from its stored dump (taken with
`REVEAL_SECRETS`). That needs nothing new from a function's author.

Fernet (from `cryptography`) authenticates as well as encrypts, so a token
sealed under another key, or altered, is refused rather than decrypted to
garbage. `MultiFernet` gives key rotation: the first key seals, every key opens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel

from functions.errors import PermanentError

SEALED = "$enc"
"""The one key of the object that stands in for a secret value in stored params."""

KEY_VARIABLE = "STEPLOG_SECRET_KEY"
REVEAL_SECRETS: dict[str, Any] = {"reveal_secrets": True}
"""Serialization context under which a params model dumps its secrets as they are."""


class UnreadableCredentials(PermanentError):
    """The run's sealed params cannot be opened here: the worker has another key, or none.

    Permanent: another attempt on the same worker would fail the same way.
    """


class SealingRefused(ValueError):
    """The params cannot be stored safely (no key to seal with, or they fake a sealed value)."""


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, url-safe base64), as `STEPLOG_SECRET_KEY` takes."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(raw: str) -> tuple[str, ...]:
    """The comma-separated keys of `STEPLOG_SECRET_KEY`; ValueError names none of them."""
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys:
        raise ValueError(f"{KEY_VARIABLE} is empty")
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # Never echo the value: it is the key.
            raise ValueError(
                f"{KEY_VARIABLE}: key {number} of {len(keys)} is not a Fernet key"
                " (32 bytes in url-safe base64; make one with `steplog secret-key new`)"
            ) from None
    return keys


class Sealer:
    """Seals values with the first of its keys and opens values sealed with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError(f"{KEY_VARIABLE} is empty")
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._first = base64.urlsafe_b64decode(keys[0])

    def __repr__(self) -> str:
        return "Sealer(<keys hidden>)"

    def fingerprint_key(self) -> bytes:
        """A key for idempotency fingerprints of params holding a secret, derived from
        the sealing key (never the sealing key itself)."""
        return hmac.new(self._first, b"steplog idempotency fingerprint", hashlib.sha256).digest()

    def seal(self, value: Any) -> dict[str, str]:
        plain = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return {SEALED: self._fernet.encrypt(plain).decode("ascii")}

    def open(self, sealed: dict[str, str]) -> Any:
        """The value sealed in `sealed`; `InvalidToken` under a key this sealer lacks."""
        return json.loads(self._fernet.decrypt(sealed[SEALED].encode("ascii")))


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SEALED), str)


def seal_params(model: BaseModel, sealer: Sealer | None) -> dict[str, Any]:
    """The params to store: the model's stored dump with every secret value sealed.

    Raises `SealingRefused` when there is a secret but no key to seal it with
    (PostgreSQL without `STEPLOG_SECRET_KEY`), or when a value that is not a
    secret is shaped like a sealed one (the worker would try to open it).
    """
    shown = model.model_dump(mode="json")
    stored = model.model_dump(mode="json", context=REVEAL_SECRETS)
    return _seal(shown, stored, sealer)


def _seal(shown: Any, stored: Any, sealer: Sealer | None) -> Any:
    if is_sealed(stored):
        raise SealingRefused(f"params may not contain objects of the form {{{SEALED!r}: …}}")
    if isinstance(stored, dict) and isinstance(shown, dict) and shown.keys() == stored.keys():
        return {key: _seal(shown[key], value, sealer) for key, value in stored.items()}
    if isinstance(stored, list) and isinstance(shown, list) and len(shown) == len(stored):
        return [_seal(a, b, sealer) for a, b in zip(shown, stored, strict=True)]
    if shown == stored:
        return stored
    if sealer is None:
        raise SealingRefused(
            f"these params hold a secret and this server has no {KEY_VARIABLE} to encrypt it"
            " with (with PostgreSQL it must be set)"
        )
    return sealer.seal(stored)


def open_params(params: dict[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """The params with every sealed value opened: only for the worker, right before the call.

    Raises `UnreadableCredentials` (a permanent failure of the run, with a message
    that names the cause and no secret) when a value cannot be opened.
    """
    opened: dict[str, Any] = _open(params, sealer)
    return opened


def _open(value: Any, sealer: Sealer | None) -> Any:
    if is_sealed(value):
        if sealer is None:
            raise UnreadableCredentials(
                f"cannot decrypt the run's credentials: {KEY_VARIABLE} is not set here,"
                " and they were stored encrypted"
            )
        try:
            return sealer.open(value)
        except InvalidToken:
            raise UnreadableCredentials(
                f"cannot decrypt the run's credentials: {KEY_VARIABLE} differs from the one"
                " they were stored with"
            ) from None
    if isinstance(value, dict):
        return {key: _open(item, sealer) for key, item in value.items()}
    if isinstance(value, list):
        return [_open(item, sealer) for item in value]
    return value


def mask_sealed(value: Any, mask: str) -> Any:
    """`value` with every sealed value replaced by `mask` (what the API shows)."""
    if is_sealed(value):
        return mask
    if isinstance(value, dict):
        return {key: mask_sealed(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_sealed(item, mask) for item in value]
    return value
