"""Request ids: every response carries ``X-Request-ID`` (the client's own when it sent a sane one, else a
new one), and every log line written while the request is handled carries it as ``request_id`` (the
access log line too), so a client's report can be found in the logs."""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from shared.logging import current_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed into our headers and logs: only short tokens without separators or spaces.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def choose_request_id(incoming: str | None) -> str:
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = choose_request_id(request.headers.get(REQUEST_ID_HEADER))
    # Not reset afterwards: aiohttp writes the access log line after the handler returns, in this task.
    current_request_id.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # what the error middleware lets through (redirects)
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    if not response.prepared:  # a streamed response has sent its headers already
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def setup(app: web.Application) -> None:
    """Outermost middleware, so error responses and the metrics middleware's view carry the id too."""
    app.middlewares.insert(0, request_id_middleware)
