"""The worker's Prometheus metrics (prometheus_client), in one registry per process: blur jobs by outcome
and error code, in flight, their queue wait and the time of each stage, and the process's own
(``process_resident_memory_bytes``, ``process_cpu_seconds_total``, …).

The task records a job once, when it ends (:func:`observe_job`); :func:`in_flight` wraps the task.
``VEIL_WORKER__METRICS_PORT`` serves them (:func:`serve`): unset, nothing listens (``veil up``, tests);
0 takes a free port, which the worker publishes in its heartbeat (``runtime.metrics_port``), so several
workers on one machine never fight over one."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from shared.jobs import JobRecord

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("veil.worker")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

# The timings a finished job's record carries (workers/tasks.py, workers/pipeline.py), in pipeline order.
STAGES = ("fetch", "decode", "detect_faces", "detect_plates", "blur", "encode", "store")

JOBS = Counter(
    "veil_jobs",
    "Blur jobs this worker ended, by outcome and error code (empty when it succeeded).",
    ["outcome", "code"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("veil_jobs_in_flight", "Blur jobs running in this worker now.", registry=REGISTRY)
QUEUE_WAIT = Histogram(
    "veil_job_queue_wait_seconds",
    "From a job's submission to its first start, for the jobs this worker ended.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "veil_job_stage_seconds",
    "Time of each stage of a job: fetch, decode, detect_faces, detect_plates, blur, encode, store.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

# The watched prefix (workers/watch.py): each object counted once, by the worker whose poll saw it end.
WATCH_OBJECTS = Counter(
    "veil_watch_objects",
    "Objects of the watched prefix that ended: succeeded, failed (tagged, never retried automatically) or"
    " skipped (not an image by its name).",
    ["outcome"],
    registry=REGISTRY,
)
WATCH_QUEUED = Counter(
    "veil_watch_queued", "Blur jobs this worker queued for objects of the watched prefix.", registry=REGISTRY
)
WATCH_POLL_FAILURES = Counter(
    "veil_watch_poll_failures",
    "Polls of the watched prefix that failed (the store or Redis away); the next poll tries again.",
    registry=REGISTRY,
)


def observe_job(record: JobRecord) -> None:
    """Count a job that ended (its final record) and observe its queue wait and stage timings."""
    JOBS.labels(record.status.value, record.error.code if record.error is not None else "").inc()
    if record.started_at is not None:
        QUEUE_WAIT.observe(max(0.0, (record.started_at - record.created_at).total_seconds()))
    for stage in STAGES:
        ms = record.timings_ms.get(stage)
        if ms is not None:
            STAGE_SECONDS.labels(stage).observe(ms / 1000)


def in_flight(task: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Count the task's runs in :data:`IN_FLIGHT` while they run (prometheus_client's own decorator
    would count only the creation of the coroutine)."""

    @functools.wraps(task)
    async def tracked(*args: P.args, **kwargs: P.kwargs) -> R:
        with IN_FLIGHT.track_inprogress():
            return await task(*args, **kwargs)

    return tracked


@dataclass(frozen=True)
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        """Blocks until the serving thread has stopped (up to its poll interval, half a second)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(host: str, port: int | None) -> MetricsServer | None:
    """Serve :data:`REGISTRY` on ``host:port`` from a thread (scrapes never wait on the event loop); None
    when ``port`` is None. Port 0: a free one, see :attr:`MetricsServer.port`."""
    if port is None:
        return None
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    metrics = MetricsServer(server, thread)
    log.info("worker metrics on http://%s:%d/metrics", host, metrics.port)
    return metrics
