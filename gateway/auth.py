"""API-key authentication: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``."""

from __future__ import annotations

from aiohttp import web

from gateway.backends import redis_errors
from gateway.state import API_KEYS
from shared.apikeys import ApiKey
from shared.errors import UnauthorizedError


def presented_key(request: web.Request) -> str | None:
    """The key the client sent, if any (``X-API-Key`` wins over ``Authorization``)."""
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(request: web.Request) -> ApiKey:
    """The caller's API key; :class:`UnauthorizedError` (401) when missing or unknown."""
    token = presented_key(request)
    if token is None:
        raise UnauthorizedError("missing API key: send it in the X-API-Key header")
    with redis_errors("checking the API key"):
        key = await request.config_dict[API_KEYS].verify(token)
    if key is None:
        raise UnauthorizedError("unknown or revoked API key")
    return key
