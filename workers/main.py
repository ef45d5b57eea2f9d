"""Worker entry point: ``python -m workers`` (or ``veil worker``).

Start-up order matters: load models, warm them up, and only then announce the worker as ready and
start taking jobs, so ``/readyz`` never sends traffic to a worker that would time out on its first image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
from arq import cron
from arq.utils import timestamp_ms
from arq.worker import Worker, func
from redis.asyncio import Redis

from shared.bulk import EXPAND_FUNCTION
from shared.gcfreeze import freeze_startup_objects
from shared.jobs import utcnow
from shared.jobstore import JobStore
from shared.logging import configure_logging
from shared.queue import ANONYMIZE_FUNCTION, arq_redis_settings, deserialize, queued_channel, serialize
from shared.readiness import HEARTBEAT_SECONDS, WorkerInfo, announce, withdraw
from shared.settings import Settings, load_settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from workers.bulk import expand_bulk
from workers.claim import JobClaimer
from workers.context import CTX_KEY, WorkerContext, worker_context
from workers.notify import DELIVER_FUNCTION, MAX_ATTEMPTS, deliver_webhook
from workers.runtime import Engine, cpu_count, load_engine, plan_for_this_machine
from workers.sweeper import sweep_expired, sweep_jobs
from workers.tasks import anonymize
from workers.wakeup import IDLE_POLL_SECONDS, QueueWakeup

log = logging.getLogger("veil.worker")


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


def make_startup(settings: Settings) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        store = ObjectStore(settings.s3)
        await asyncio.to_thread(store.ensure_bucket)
        engine = await asyncio.to_thread(load_engine, settings.worker)
        if engine.plan.lanes >= cpu_count():
            cv2.setNumThreads(1)  # each lane is one core already; OpenCV's own pool would oversubscribe
        await asyncio.to_thread(engine.warm_up)
        redis = Redis.from_url(settings.redis.url)
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
            models=[f"centerface-{engine.plan.face_model}", f"platedet-{engine.plan.plate_model}"],
            started_at=utcnow().isoformat(),
            host=socket.gethostname(),
            rss_bytes=rss_bytes(),
            runtime={**engine.plan.describe(), "max_jobs": effective_max_jobs(settings)},
        )
        ctx["heartbeat"] = asyncio.create_task(_heartbeat(state, info))
        ctx["engine"] = engine
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


class VeilWorker(Worker):
    """arq's worker with a cheaper claim of each job.

    arq reads job ids from the head of the queue, and a job stays there until it ends, so every poll with a
    free slot walks past this worker's own running jobs: those ids are known locally and skipped. Every
    other id is claimed with one script (:mod:`workers.claim`) instead of arq's four-round-trip
    transaction; what happens after (arq's ``run_job``, its retries and results) is arq's own."""

    _claimer: JobClaimer | None = None
    _wakeup: QueueWakeup | None = None
    idle_poll_s = IDLE_POLL_SECONDS

    async def _poll_iteration(self) -> None:
        # Burst mode (tests, one-off runs) keeps arq's timer: it must notice an empty queue to stop.
        if not self.burst:
            if self._wakeup is None:
                channel = queued_channel(self.queue_name)
                self._wakeup = QueueWakeup(self.pool, channel, idle_poll_s=self.idle_poll_s)
                self._wakeup.start()
            else:
                await self._wakeup.wait()
        await super()._poll_iteration()

    def handle_sig(self, signum: signal.Signals) -> None:
        # arq cancels the running jobs to run them again: tell them it is not its job timeout.
        state = self.ctx.get(CTX_KEY)
        if isinstance(state, WorkerContext):
            state.stopping = True
        super().handle_sig(signum)

    async def close(self) -> None:
        if self._wakeup is not None:
            await self._wakeup.close()
        await super().close()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if self._claimer is None:
            self._claimer = JobClaimer(self.pool, self.queue_name, int(self.in_progress_timeout_s * 1000))
        for job_id_b in job_ids:
            job_id = job_id_b.decode()
            running = self.tasks.get(job_id)
            if running is not None and not running.done():
                continue
            # From here on as arq's start_jobs: a slot first, then the claim.
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            score = await self._claimer.claim(job_id, timestamp_ms())
            if score is None:  # running in another worker, finished, or deferred to later
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            if self._wakeup is not None:  # a slot is free again: look at the queue
                task.add_done_callback(self._wakeup.poke)
            self.tasks[job_id] = task


def build_worker(settings: Settings, *, burst: bool = False) -> Worker:
    w = settings.worker
    return VeilWorker(
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
        ],
        queue_name=settings.redis.queue_name,
        redis_settings=arq_redis_settings(settings.redis),
        on_startup=make_startup(settings),
        on_shutdown=shutdown,
        max_jobs=effective_max_jobs(settings),
        job_timeout=w.job_timeout_seconds,
        max_tries=w.max_tries,
        keep_result=3600,
        # Between polls the worker waits on QueueWakeup (woken by new jobs and freed slots); the timer here
        # only paces burst mode.
        poll_delay=0.05 if burst else 0,
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
