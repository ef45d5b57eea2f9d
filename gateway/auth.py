"""API-key authentication and scopes: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Scopes are enforced here and nowhere else, from the request alone: anything under ``/v1/admin/`` needs
``admin``; otherwise GET and HEAD need ``read`` and every other method ``submit``. A known key without the
scope is a 403 ``FORBIDDEN``, which the error middleware renders in the shape of the API that was called.
The facades, which take the key from their own headers, go through :func:`verify_token` too.
"""

from __future__ import annotations

from aiohttp import web

from gateway.backends import redis_errors
from gateway.state import API_KEYS
from shared.apikeys import ApiKey, Scope
from shared.errors import ForbiddenError, UnauthorizedError

ADMIN_PATH = "/v1/admin/"
READ_METHODS = frozenset({"GET", "HEAD"})


def presented_key(request: web.Request) -> str | None:
    """The key the client sent, if any (``X-API-Key`` wins over ``Authorization``)."""
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def required_scope(request: web.Request) -> Scope:
    """The scope a key needs for this request."""
    if request.path.startswith(ADMIN_PATH) or request.path == ADMIN_PATH.rstrip("/"):
        return Scope.ADMIN
    return Scope.READ if request.method in READ_METHODS else Scope.SUBMIT


def authorize(request: web.Request, key: ApiKey) -> ApiKey:
    """``key`` when it has the scope this request needs; :class:`ForbiddenError` (403) otherwise."""
    scope = required_scope(request)
    if not key.allows(scope):
        held = ", ".join(key.scopes) or "none"
        raise ForbiddenError(
            f"this API key lacks the {scope.value!r} scope that {request.method} {request.path} needs"
            f" (its scopes: {held})"
        )
    return key


async def verify_token(request: web.Request, token: str) -> ApiKey | None:
    """The key ``token`` stands for, checked against this request's scope; None when unknown or revoked
    (each caller answers that in its own way), :class:`ForbiddenError` when it lacks the scope."""
    with redis_errors("checking the API key"):
        key = await request.config_dict[API_KEYS].verify(token)
    return None if key is None else authorize(request, key)


async def authenticate(request: web.Request) -> ApiKey:
    """The caller's API key; :class:`UnauthorizedError` (401) when missing or unknown,
    :class:`ForbiddenError` (403) when it lacks the request's scope."""
    token = presented_key(request)
    if token is None:
        raise UnauthorizedError("missing API key: send it in the X-API-Key header")
    key = await verify_token(request, token)
    if key is None:
        raise UnauthorizedError("unknown or revoked API key")
    return key
