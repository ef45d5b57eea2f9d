"""``GET /metrics`` (prometheus_client): requests by route pattern and status and their latency, this
process's own metrics (``process_*``), and queue depth and the ready workers with their memory, read from
Redis at each scrape (so every gateway replica reports the same). One registry per app: tests build many."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from redis.asyncio import Redis

from gateway.backends import redis_errors
from gateway.state import REDIS, SETTINGS
from shared.readiness import ready_workers

# Facades hold a request while its job runs (GatewaySettings.facade_timeout_seconds, 30 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "veil_http_requests",
            "HTTP requests answered by this gateway process.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "veil_http_request_duration_seconds",
            "Time to answer a request (to its headers, for streamed bodies), by route pattern.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "veil_queue_depth", "Jobs waiting or running in the queue.", registry=self.registry
        )
        self.workers_ready = Gauge(
            "veil_workers_ready",
            "Workers with their models loaded and a fresh heartbeat.",
            registry=self.registry,
        )
        self.worker_rss = Gauge(
            "veil_worker_rss_bytes",
            "Resident memory of each ready worker.",
            ["worker"],
            registry=self.registry,
        )
        uptime = Gauge(
            "veil_gateway_uptime_seconds",
            "Seconds since this gateway process started.",
            registry=self.registry,
        )
        started = time.monotonic()
        uptime.set_function(lambda: time.monotonic() - started)
        ProcessCollector(registry=self.registry)

    async def refresh(self, redis: Redis, queue_name: str, prefix: str) -> None:
        """The gauges kept in Redis, read now: a collector cannot await, so the handler calls this first."""
        depth = await redis.zcard(queue_name)
        workers = await ready_workers(redis, prefix)
        # No await from here on: a concurrent scrape never sees the per-worker gauge half filled.
        self.queue_depth.set(depth)
        self.workers_ready.set(len(workers))
        self.worker_rss.clear()  # workers that left must not linger
        for worker in workers:
            if worker.rss_bytes:
                self.worker_rss.labels(worker.id).set(worker.rss_bytes)


METRICS = web.AppKey("metrics", GatewayMetrics)

routes = web.RouteTableDef()


def setup(app: web.Application) -> None:
    app[METRICS] = GatewayMetrics()
    app.middlewares.insert(0, metrics_middleware)  # outermost: it sees the status the error middleware chose
    app.add_routes(routes)


def _route(request: web.Request) -> str:
    # The route's pattern (/v1/jobs/{job_id}), never the raw path: ids would explode the label set.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics, route = request.config_dict[METRICS], _route(request)
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)


@routes.get("/metrics")
async def metrics_handler(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    metrics = request.config_dict[METRICS]
    with redis_errors("reading queue metrics"):
        await metrics.refresh(request.config_dict[REDIS], settings.redis.queue_name, settings.redis.prefix)
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
