"""Standard Webhooks signatures, verified over the body's bytes.

The spec signs `{webhook-id}.{webhook-timestamp}.{body}` with the body as sent,
whatever its bytes. The `standardwebhooks` library's `Webhook.verify` decodes
the body as UTF-8 before it checks anything, so a correctly signed body that is
not UTF-8 failed as a bad signature (401) when what is wrong is the body (400).
`verify` here makes the same checks as the library, in its order and with its
messages (missing headers, timestamp outside five minutes, no matching `v1`
signature), over the bytes; the library still parses the secret and computes
the HMAC. The caller decodes the body only once the sender is authenticated.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import Webhook, WebhookVerificationError, hmac_data

TOLERANCE = timedelta(minutes=5)
"""How far the signed timestamp may be from now, either way (the library's value)."""


class _BytesWebhook(Webhook):
    """The library's `Webhook` (secret parsing, `whsec_` prefix) with a bytes digest."""

    def digest(self, msg_id: str, timestamp: int, body: bytes) -> bytes:
        return hmac_data(self._whsecret, f"{msg_id}.{timestamp}.".encode() + body)


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise `WebhookVerificationError` unless `headers` sign `body` with `secret` now."""
    webhook = _BytesWebhook(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    signatures = lowered.get("webhook-signature")
    timestamp = lowered.get("webhook-timestamp")
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError("Missing required headers")
    seconds = _timestamp(timestamp)
    expected = webhook.digest(msg_id, seconds, body)
    for versioned in signatures.split(" "):
        version, _, encoded = versioned.partition(",")
        if version != "v1":
            continue
        try:
            presented = base64.b64decode(encoded)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, presented):
            return
    raise WebhookVerificationError("No matching signature found")


def _timestamp(header: str) -> int:
    """The signed Unix time, whole seconds as the library signs it; refused if not near now."""
    try:
        when = datetime.fromtimestamp(float(header), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise WebhookVerificationError("Invalid Signature Headers") from None
    now = datetime.now(tz=UTC)
    if when < now - TOLERANCE:
        raise WebhookVerificationError("Message timestamp too old")
    if when > now + TOLERANCE:
        raise WebhookVerificationError("Message timestamp too new")
    return math.floor(when.timestamp())
