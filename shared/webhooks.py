"""Signed webhooks: how Veil signs a delivery and how a receiver checks it.

Each delivery carries ``Veil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, where the HMAC's key is
the API key's webhook secret (shown once by ``veil keys create``) and its message is ``"<t>." + body``.
Receivers recompute it over the raw body, compare in constant time, and reject old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Veil-Signature"
EVENT_HEADER = "Veil-Event"
DELIVERY_HEADER = "Veil-Delivery"
DEFAULT_TOLERANCE_SECONDS = 300


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Veil-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes, *, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance`` seconds of ``now``."""
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
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
