"""The one error middleware: every failure becomes a response rendered for the surface that was called.

Failures are first normalised to an :class:`ErrorInfo` (status, code, message):

* :class:`shared.errors.VeilError` keeps its ``code`` and gets its status from :data:`STATUS_BY_ERROR`
  (the one place error classes meet HTTP);
* aiohttp's ``HTTPException`` (404 from the router, 405, 413 from the body limit...) gets a code from its
  status; redirects and other non-errors pass through untouched;
* anything else is a bug: logged with its traceback and answered 500 ``INTERNAL_ERROR``.

Then the :class:`ErrorRenderer` registered for the longest matching path prefix renders it. The native API
renders ``{"message", "code"}``; a vendor-compatible facade mounted under, say, ``/compat/foo/`` calls
``register_error_renderer(app, "/compat/foo/", render_foo_error)`` to answer in that vendor's shape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.responses import json_response
from shared import errors
from shared.errors import VeilError

log = logging.getLogger(__name__)

# Each error class's status; a subclass not listed takes its nearest listed ancestor's.
STATUS_BY_ERROR: Mapping[type[VeilError], int] = {
    errors.VeilError: 500,
    errors.PermanentError: 400,
    errors.UnauthorizedError: 401,
    errors.InsufficientCreditsError: 402,
    errors.ForbiddenError: 403,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.GoneError: 410,
    errors.PayloadTooLargeError: 413,
    errors.UnsupportedMediaError: 415,
    errors.DetectionError: 500,
    errors.TransientError: 503,
    errors.RateLimitedError: 429,
    errors.QuotaExceededError: 429,
}


def http_status(error: VeilError) -> int:
    """The HTTP status the gateway answers ``error`` with."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


_CODES_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}

# Headers of an aiohttp HTTPException worth keeping on the rendered error (405 must say what is allowed).
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


@dataclass(frozen=True)
class ErrorInfo:
    """A failure as every surface sees it, before rendering."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    # The error it came from, when a Veil error: a facade may need more than the code (which quota).
    cause: VeilError | None = None

    @classmethod
    def from_veil_error(cls, error: VeilError) -> ErrorInfo:
        headers: dict[str, str] = {}
        status = http_status(error)
        if error.retry_after is not None:
            headers["Retry-After"] = retry_after_header(error.retry_after)
        elif status == 503:
            headers["Retry-After"] = "5"
        return cls(status, error.code, error.message, headers, error)

    @classmethod
    def from_http_exception(cls, exc: web.HTTPException) -> ErrorInfo:
        status = exc.status
        code = _CODES_BY_STATUS.get(status, f"HTTP_{status}")
        try:
            default_message = HTTPStatus(status).phrase
        except ValueError:
            default_message = exc.reason
        text = exc.text or ""
        # aiohttp's default body is "<status>: <reason>"; prefer a plain message.
        message = default_message if not text or text.startswith(f"{status}:") else text
        headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        return cls(status, code, message, headers)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, so a client that obeys it is not refused again."""
    return str(max(1, math.ceil(seconds)))


ErrorRenderer = Callable[[web.Request, ErrorInfo], web.StreamResponse]


def render_native_error(request: web.Request, error: ErrorInfo) -> web.StreamResponse:
    """The native API's error shape: ``{"message": ..., "code": ...}``."""
    return json_response(
        {"message": error.message, "code": error.code}, status=error.status, headers=error.headers
    )


class ErrorRenderers:
    """Error renderers by path prefix; the longest matching prefix wins, else the default."""

    def __init__(self, default: ErrorRenderer = render_native_error) -> None:
        self.default = default
        self._by_prefix: dict[str, ErrorRenderer] = {}

    def register(self, prefix: str, renderer: ErrorRenderer) -> None:
        if not prefix.startswith("/"):
            raise ValueError(f"route prefix must start with '/': {prefix!r}")
        self._by_prefix[prefix] = renderer

    def for_path(self, path: str) -> ErrorRenderer:
        best = ""
        for prefix in self._by_prefix:
            if path.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self._by_prefix[best] if best else self.default


ERROR_RENDERERS = web.AppKey("error_renderers", ErrorRenderers)


def register_error_renderer(app: web.Application, prefix: str, renderer: ErrorRenderer) -> None:
    """Render errors of every path under ``prefix`` with ``renderer`` (for facades with their own shape)."""
    app[ERROR_RENDERERS].register(prefix, renderer)


def _renderer(request: web.Request) -> ErrorRenderer:
    renderers = request.config_dict.get(ERROR_RENDERERS)
    return renderers.for_path(request.path) if renderers is not None else render_native_error


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VeilError as exc:
        info = ErrorInfo.from_veil_error(exc)
        if info.status >= 500:
            log.warning(
                "%s %s -> %d %s: %s", request.method, request.path, info.status, info.code, info.message
            )
        return _renderer(request)(request, info)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        return _renderer(request)(request, ErrorInfo.from_http_exception(exc))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        info = ErrorInfo(500, "INTERNAL_ERROR", "internal error")
        return _renderer(request)(request, info)
