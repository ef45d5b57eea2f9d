"""Worker entry point: ``python -m workers`` (or ``veil worker``).

Start-up order matters: load models, warm them up, and only then announce the worker as ready and
start taking jobs, so ``/readyz`` never sends traffic to a worker that would time out on its first image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from arq import cron
from arq.worker import Worker, func
from redis.asyncio import Redis

from shared.jobs import utcnow
from shared.jobstore import JobStore
from shared.logging import configure_logging
from shared.queue import ANONYMIZE_FUNCTION, arq_redis_settings, deserialize, serialize
from shared.readiness import HEARTBEAT_SECONDS, WorkerInfo, announce, withdraw
from shared.settings import Settings, load_settings
from shared.storage import ObjectStore
from workers.context import CTX_KEY, WorkerContext, worker_context
from workers.pipeline import Anonymizer
from workers.tasks import anonymize, sweep_expired

log = logging.getLogger("veil.worker")


async def _heartbeat(state: WorkerContext, info: WorkerInfo) -> None:
    while True:
        try:
            await announce(state.redis, state.settings.redis.prefix, info)
        except Exception:  # Redis blips must not kill the worker; arq reconnects on its own
            log.warning("heartbeat failed", exc_info=True)
        await asyncio.sleep(HEARTBEAT_SECONDS)


def make_startup(settings: Settings) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        store = ObjectStore(settings.s3)
        await asyncio.to_thread(store.ensure_bucket)
        anonymizer = await asyncio.to_thread(Anonymizer.load, settings.worker.model_dir, settings.worker)
        await asyncio.to_thread(anonymizer.warm_up)
        redis = Redis.from_url(settings.redis.url)
        state = WorkerContext(
            id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            settings=settings,
            redis=redis,
            store=store,
            jobs=JobStore(redis, settings.redis.prefix),
            anonymizer=anonymizer,
            inference=ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference"),
        )
        ctx[CTX_KEY] = state
        info = WorkerInfo(
            id=state.id,
            providers=anonymizer.providers,
            models=["centerface", "platedet"],
            started_at=utcnow().isoformat(),
            host=socket.gethostname(),
        )
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(state, info))
        log.info("worker %s ready on %s", state.id, ", ".join(anonymizer.providers))

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
    await state.redis.aclose()
    state.inference.shutdown(wait=False, cancel_futures=True)


def build_worker(settings: Settings, *, burst: bool = False) -> Worker:
    w = settings.worker
    return Worker(
        functions=[
            func(anonymize, name=ANONYMIZE_FUNCTION, timeout=w.job_timeout_seconds, max_tries=w.max_tries)
        ],
        cron_jobs=[cron(sweep_expired, minute={7}, timeout=w.job_timeout_seconds, unique=True)],
        queue_name=settings.redis.queue_name,
        redis_settings=arq_redis_settings(settings.redis),
        on_startup=make_startup(settings),
        on_shutdown=shutdown,
        max_jobs=w.max_jobs,
        job_timeout=w.job_timeout_seconds,
        max_tries=w.max_tries,
        keep_result=3600,
        poll_delay=0.05,
        burst=burst,
        job_serializer=serialize,
        job_deserializer=deserialize,
        health_check_interval=30,
        handle_signals=True,
    )


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    build_worker(settings).run()


if __name__ == "__main__":
    main()
