"""``GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD``: a key's use per UTC day (shared/usage.py), and the
totals (shared/usagereport.py). A key sees its own; an ``admin`` key every live key's, or one's with
``key_id``."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from gateway.auth import authenticate
from gateway.backends import redis_errors
from gateway.responses import json_response
from gateway.state import API_KEYS
from shared.apikeys import Scope
from shared.errors import ForbiddenError, ValidationError
from shared.usage import UsageStore
from shared.usagereport import date_range, report

routes = web.RouteTableDef()

PARAMETERS = ("from", "to", "key_id")


def _query(request: web.Request) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in PARAMETERS:
            raise ValidationError(f"unknown query parameter {name!r}: use {', '.join(PARAMETERS)}")
        if name in query:
            raise ValidationError(f"{name} is given more than once")
        query[name] = value.strip()
    return query


@routes.get("/v1/usage")
async def get_usage(request: web.Request) -> web.Response:
    key = await authenticate(request)
    query = _query(request)
    first, last = date_range(query.get("from"), query.get("to"), datetime.now(UTC).date())
    wanted = query.get("key_id")
    admin = key.allows(Scope.ADMIN)
    if wanted is not None and wanted != key.id and not admin:
        raise ForbiddenError("only an admin key may read another key's usage")
    keys = request.config_dict[API_KEYS]
    with redis_errors("read the usage"):
        if wanted is not None:
            key_ids = [wanted]
        elif admin:
            key_ids = sorted(known.id for known in await keys.list())
        else:
            key_ids = [key.id]
        found = await report(UsageStore(keys.redis, keys.prefix), key_ids, first, last)
    return json_response(found.model_dump(mode="json", by_alias=True))
