"""Signed webhooks, per Standard Webhooks (https://www.standardwebhooks.com): how Veil signs a delivery and
how a receiver checks it.

Each delivery carries ``webhook-id`` (the message's id, the same on every retry of it), ``webhook-timestamp``
(when this attempt was sent, unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<raw body>">``). The HMAC's key is the API key's webhook secret, ``whsec_<base64 of the
key bytes>`` (shown once by ``veil keys create``), so any Standard Webhooks library verifies a delivery; in
Python, ``standardwebhooks.Webhook(secret).verify(body, headers)``. The signature itself is made by that
library (``standardwebhooks``, no dependencies of its own).

Secrets issued before Veil followed the spec (``whsec_`` and 32 characters) spell their key bytes in the
URL-safe base64 alphabet. Veil reads either alphabet; :func:`standard_secret` rewrites an old secret for
libraries that only read the standard one.

Deprecated, sent for one more release: ``Veil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, keyed
with the secret string's UTF-8 bytes over ``"<t>." + body`` (:func:`legacy_signature`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
LEGACY_SIGNATURE_HEADER = "Veil-Signature"  # deprecated: remove in the release after next
EVENT_HEADER = "Veil-Event"
DELIVERY_HEADER = "Veil-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300  # the spec's five minutes
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

_URL_SAFE_TO_STANDARD = str.maketrans("-_", "+/")


def new_secret() -> str:
    """A fresh webhook secret: ``whsec_`` and the standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def standard_secret(secret: str) -> str:
    """``secret`` with its key bytes in the standard base64 alphabet (older secrets used the URL-safe one)."""
    return SECRET_PREFIX + secret.removeprefix(SECRET_PREFIX).translate(_URL_SAFE_TO_STANDARD)


def message_id(job_id: str, event: str) -> str:
    """The ``webhook-id`` of ``event`` for ``job_id``: one per message, kept by its retries."""
    return f"msg_{job_id}_{event.replace('.', '_')}"


def _signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    sent_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(standard_secret(secret)).sign(msg_id, sent_at, body)


def _legacy_digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def legacy_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The deprecated ``Veil-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_legacy_digest(secret, timestamp, body)}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one delivery attempt of ``body`` (a JSON document, so UTF-8)."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: _signature(secret, msg_id, timestamp, body.decode()),
        LEGACY_SIGNATURE_HEADER: legacy_signature(secret, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when ``headers`` hold a valid Standard Webhooks signature of ``body`` made within ``tolerance``
    seconds of ``now`` (default: the current time). Header names are matched case-insensitively."""
    by_name = {name.lower(): value for name, value in headers.items()}
    msg_id = by_name.get(ID_HEADER)
    stamp = by_name.get(TIMESTAMP_HEADER, "")
    signatures = by_name.get(SIGNATURE_HEADER)
    if not msg_id or not signatures or not (stamp.isascii() and stamp.isdigit()):
        return False
    timestamp = int(stamp)
    if abs((int(time.time()) if now is None else now) - timestamp) > tolerance:
        return False
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return False
    expected = _signature(secret, msg_id, timestamp, text).encode()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in signatures.split())


def verify_legacy(
    secret: str, header: str, body: bytes, *, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """Deprecated: True when ``header`` is a valid ``Veil-Signature`` of ``body`` made within ``tolerance``
    seconds of ``now``."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = _legacy_digest(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in fields.get("v1", []))
