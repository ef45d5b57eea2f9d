"""Worker entry point: ``python -m workers`` (or ``veil worker``).

Start-up order matters: load models, warm them up, and only then announce the worker as ready and
start taking jobs, so ``/readyz`` never sends traffic to a worker that would time out on its first image.

The worker is arq's own ``Worker``, configured through its documented settings only (docs/decisions.md,
"arq"): it polls the queue every :data:`POLL_DELAY_SECONDS`.

Stopping (SIGTERM, as Kubernetes sends; or SIGINT) drains: no new jobs, the running ones get
``VEIL_WORKER__DRAIN_SECONDS`` to finish (arq's ``job_completion_wait``), then what is left is handed back
to the queue and the worker exits 0. A second signal hands back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import cv2
from arq import cron
from arq.worker import Function, Worker, func

from shared.bulk import EXPAND_FUNCTION
from shared.gcfreeze import freeze_startup_objects
from shared.jobs import utcnow
from shared.jobstore import JobStore
from shared.logging import configure_logging
from shared.queue import ANONYMIZE_FUNCTION, ANONYMIZE_VIDEO_FUNCTION, deserialize, queue_client, serialize
from shared.readiness import HEARTBEAT_SECONDS, WorkerInfo, announce, withdraw
from shared.redisconn import redis_client
from shared.settings import Settings, load_settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from workers.bulk import expand_bulk
from workers.context import CTX_KEY, WorkerContext, worker_context
from workers.engine import Engine, load_engine
from workers.metrics import MetricsServer, serve
from workers.notify import DELIVER_FUNCTION, MAX_ATTEMPTS, deliver_webhook
from workers.plan import cpu_count, plan_for_this_machine
from workers.sweeper import sweep_expired, sweep_jobs
from workers.tasks import anonymize
from workers.watch import watch_cron_jobs

log = logging.getLogger("veil.worker")

# arq's poll of the queue: how long a job queued on an idle worker waits at most before it starts, and how
# soon a finished job's slot is filled again (max_jobs keeps several jobs per lane, so lanes do not wait on
# it). Measured (docs/decisions.md, "arq"): an idle worker spends ~3 ms of CPU a second on it (7.7 at
# 0.1 s, 1.3 at arq's default 0.5 s); a job queued on an idle worker starts a median ~130-145 ms later.
POLL_DELAY_SECONDS = 0.25
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux), published in the heartbeat."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


async def _heartbeat(state: WorkerContext, info: WorkerInfo) -> None:
    while True:
        try:
            info.rss_bytes = rss_bytes()
            await announce(state.redis, state.settings.redis.prefix, info)
        except Exception:  # Redis blips must not kill the worker; arq reconnects on its own
            log.warning("heartbeat failed", exc_info=True)
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _stop(
    state: WorkerContext, arq_handler: Callable[[signal.Signals], None], signum: signal.Signals
) -> None:
    state.stopping = True  # before arq cancels the jobs: each tells a hand-back from arq's job timeout
    arq_handler(signum)


def watch_stop_signals(
    state: WorkerContext,
    arq_handler: Callable[[signal.Signals], None],
    drain: Callable[[signal.Signals], None] | None = None,
) -> None:
    """On the first SIGINT / SIGTERM, ``drain`` if given (arq's ``handle_sig_wait_for_completion``: no new
    jobs, the running ones get ``job_completion_wait`` to finish, then arq cancels the rest). Without it,
    and on any later signal, mark the worker as stopping and go on as arq does (``arq_handler``: the
    worker's ``handle_sig``, which cancels the running jobs for arq to run them again). A job cancelled
    that way is handed back as ``queued``, not failed as on arq's job timeout (workers/tasks.py).

    Installed with asyncio's ``add_signal_handler`` once the loop runs (on start-up), in place of the
    handlers arq installed for the same signals, which this one calls."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: signal.Signals) -> None:
        nonlocal received
        received += 1
        if drain is not None and received == 1:
            log.info("%s: draining (no new jobs; a second signal hands the running ones back)", signum.name)
            drain(signum)
        else:
            log.info("%s: handing the running jobs back to the queue", signum.name)
            _stop(state, arq_handler, signum)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


def _mark_stopping(state: WorkerContext, signum: signal.Signals) -> None:
    state.stopping = True


async def _leave(ctx: dict[str, Any], state: WorkerContext) -> None:
    """A draining worker is no capacity: stop announcing it, so /readyz and the gauges count it out."""
    task = ctx.get("heartbeat")
    if isinstance(task, asyncio.Task):
        task.cancel()
    with contextlib.suppress(Exception):  # Redis down: its heartbeat expires on its own
        await withdraw(state.redis, state.settings.redis.prefix, state.id)


def drain_on_signals(ctx: dict[str, Any], state: WorkerContext, worker: Worker) -> None:
    """Once the loop runs (start-up): the first SIGTERM / SIGINT drains (``VEIL_WORKER__DRAIN_SECONDS``,
    arq's ``job_completion_wait``) and withdraws the worker from /readyz, a second one hands back at once."""
    # arq calls on_stop right after cancelling the jobs left (on a second signal, or when the drain
    # times out), before any of them sees its cancellation: they are then handed back, not failed.
    worker.on_stop = partial(_mark_stopping, state)

    def drain(signum: signal.Signals) -> None:
        worker.handle_sig_wait_for_completion(signum)
        ctx["leaving"] = asyncio.create_task(_leave(ctx, state))

    draining = state.settings.worker.drain_seconds > 0
    watch_stop_signals(state, worker.handle_sig, drain if draining else None)


def make_startup(settings: Settings, arq_worker: Callable[[], Worker] | None = None) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        store = ObjectStore(settings.s3)
        await asyncio.to_thread(store.ensure_bucket)
        engine = await asyncio.to_thread(load_engine, settings.worker)
        if engine.plan.lanes >= cpu_count():
            cv2.setNumThreads(1)  # each lane is one core already; OpenCV's own pool would oversubscribe
        await asyncio.to_thread(engine.warm_up)
        redis = redis_client(settings.redis.url)
        state = WorkerContext(
            id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            settings=settings,
            redis=redis,
            store=store,
            transfer=ObjectTransfer.open(store),
            jobs=JobStore(redis, settings.redis.prefix),
            anonymizer=engine,
            inference=ThreadPoolExecutor(max_workers=engine.plan.lanes, thread_name_prefix="lane"),
        )
        ctx[CTX_KEY] = state
        info = WorkerInfo(
            id=state.id,
            providers=engine.providers,
            models=engine.models,
            started_at=utcnow().isoformat(),
            host=socket.gethostname(),
            rss_bytes=rss_bytes(),
            runtime={**engine.plan.describe(), "max_jobs": effective_max_jobs(settings)},
        )
        ctx["metrics_server"] = metrics = serve(settings.worker.host, settings.worker.metrics_port)
        if metrics is not None:  # port 0 picks a free one: the heartbeat tells where to scrape
            info.runtime["metrics_port"] = metrics.port
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(state, info))
        ctx["engine"] = engine
        if arq_worker is not None:
            drain_on_signals(ctx, state, arq_worker())
        # What start-up built (models, clients) lives until exit: keep it out of every GC pass.
        frozen = freeze_startup_objects()
        providers = ", ".join(engine.providers)
        log.info("worker %s ready on %s (%d start-up objects frozen)", state.id, providers, frozen)

    return startup


async def shutdown(ctx: dict[str, Any]) -> None:
    if CTX_KEY not in ctx:
        return
    state = worker_context(ctx)
    task = ctx.get("heartbeat")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(Exception):
        await withdraw(state.redis, state.settings.redis.prefix, state.id)
    metrics = ctx.get("metrics_server")
    if isinstance(metrics, MetricsServer):
        await asyncio.to_thread(metrics.close)
    await state.redis.aclose()
    await state.transfer.close()
    state.inference.shutdown(wait=False, cancel_futures=True)
    engine = ctx.get("engine")
    if isinstance(engine, Engine):
        engine.close()


def effective_max_jobs(settings: Settings) -> int:
    """arq's concurrency: enough jobs per lane that lanes never wait on S3 or on arq's poll (one in
    inference, others fetching, storing or queued for a lane), and two full batches so batches can fill."""
    chosen = plan_for_this_machine(settings.worker)
    per_lane = 2 if chosen.on_gpu else 4
    return max(settings.worker.max_jobs, per_lane * chosen.lanes, 2 * chosen.max_batch)


def video_functions(settings: Settings) -> list[Function]:
    """Video jobs, when on: the blur task under the video timeout. Off, a video job queued anyway (by a
    gateway with videos on) waits for a worker that takes them."""
    if not settings.video.enabled:
        return []
    video = settings.video
    timeout = video.job_timeout_seconds
    return [
        func(
            anonymize,
            name=ANONYMIZE_VIDEO_FUNCTION,
            timeout=timeout,
            max_tries=settings.worker.max_tries,
            keep_result=0,
        )
    ]


def build_worker(settings: Settings, *, burst: bool = False) -> Worker:
    w = settings.worker

    max_jobs = effective_max_jobs(settings)
    worker = Worker(
        functions=[
            # No arq result for blur jobs: the job record is their result, and a re-run of a finished job
            # is stopped by it. arq's would keep the whole payload in Redis for an hour per job.
            func(
                anonymize,
                name=ANONYMIZE_FUNCTION,
                timeout=w.job_timeout_seconds,
                max_tries=w.max_tries,
                keep_result=0,
            ),
            *video_functions(settings),
            func(expand_bulk, name=EXPAND_FUNCTION, timeout=w.job_timeout_seconds, max_tries=w.max_tries),
            func(deliver_webhook, name=DELIVER_FUNCTION, timeout=30, max_tries=MAX_ATTEMPTS),
        ],
        cron_jobs=[
            cron(sweep_expired, minute={7}, timeout=w.job_timeout_seconds, unique=True),
            # Jobs no run will finish, and deletions the store refused (workers/sweeper.py).
            cron(
                sweep_jobs,
                second=set(range(0, 60, w.sweep_interval_seconds)),
                timeout=w.job_timeout_seconds,
                unique=True,
                max_tries=1,
                keep_result=0,
            ),
            # A watched prefix (VEIL_WATCH__*), if any: refused here, at start-up, if unsafe.
            *watch_cron_jobs(settings),
        ],
        queue_name=settings.redis.queue_name,
        # Through the one Redis factory (shared/redisconn.py): a Sentinel URL works here as everywhere.
        redis_pool=queue_client(settings.redis, socket_connect_timeout=2),
        on_startup=make_startup(settings, lambda: worker),
        on_shutdown=shutdown,
        max_jobs=max_jobs,
        job_timeout=w.job_timeout_seconds,
        max_tries=w.max_tries,
        keep_result=3600,
        poll_delay=POLL_DELAY_SECONDS,
        # Ids read per poll, from the queue's head: running jobs stay there until they end (every worker's,
        # this one's too), so this must exceed the jobs all workers run at once or queued jobs behind them
        # are not seen. arq's default, spelled out.
        queue_read_limit=max(max_jobs * 5, 100),
        burst=burst,
        job_serializer=serialize,
        job_deserializer=deserialize,
        health_check_interval=30,
        handle_signals=True,  # arq's handlers, replaced on start-up by watch_stop_signals, which calls them
        # Kubernetes' grace period: running jobs get this long to finish after SIGTERM (see above).
        job_completion_wait=w.drain_seconds,
    )
    return worker


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    build_worker(settings).run()


if __name__ == "__main__":
    main()
