"""``GET /metrics`` in Prometheus' text format: request counts by route and status (this process), queue
depth and the workers that are ready (from Redis, so any gateway replica reports the same)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.backends import redis_errors
from gateway.state import REDIS, SETTINGS
from shared.readiness import ready_workers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RequestKey = tuple[str, str, int]  # method, route, status

REQUESTS = web.AppKey("request_counts", Counter[RequestKey])
STARTED = web.AppKey("started_monotonic", float)

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app[REQUESTS] = Counter()
    app[STARTED] = time.monotonic()
    app.middlewares.insert(0, metrics_middleware)  # outermost: it sees the status the error middleware chose
    app.add_routes(routes)


def _route(request: web.Request) -> str:
    # The route's pattern (/v1/jobs/{job_id}), never the raw path: ids would explode the label set.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[REQUESTS][(request.method, _route(request), status)] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    redis = request.config_dict[REDIS]
    with redis_errors("reading queue metrics"):
        depth = await redis.zcard(settings.redis.queue_name)
        workers = await ready_workers(redis, settings.redis.prefix)
    lines = [
        "# HELP veil_http_requests_total HTTP requests answered by this gateway process.",
        "# TYPE veil_http_requests_total counter",
    ]
    for (method, route, status), count in sorted(request.app[REQUESTS].items()):
        labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
        lines.append(f"veil_http_requests_total{{{labels}}} {count}")
    lines += [
        "# HELP veil_queue_depth Jobs waiting or running in the queue.",
        "# TYPE veil_queue_depth gauge",
        f"veil_queue_depth {depth}",
        "# HELP veil_workers_ready Workers with their models loaded and a fresh heartbeat.",
        "# TYPE veil_workers_ready gauge",
        f"veil_workers_ready {len(workers)}",
        "# HELP veil_worker_rss_bytes Resident memory of each ready worker.",
        "# TYPE veil_worker_rss_bytes gauge",
    ]
    lines += [
        f'veil_worker_rss_bytes{{worker="{_escape(w.id)}"}} {w.rss_bytes}' for w in workers if w.rss_bytes
    ]
    lines += [
        "# HELP veil_gateway_uptime_seconds Seconds since this gateway process started.",
        "# TYPE veil_gateway_uptime_seconds gauge",
        f"veil_gateway_uptime_seconds {time.monotonic() - request.app[STARTED]:.0f}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
