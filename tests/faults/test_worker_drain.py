"""SIGTERM drains a worker (workers/main.py ``drain_on_signals``): it takes no new job, lets its running one
finish within ``VEIL_WORKER__DRAIN_SECONDS``, hands back what is still running then, and a second signal
hands back at once. A real arq ``Worker`` on the real Redis and SeaweedFS; the detector is a stand-in that
blocks until the test releases it. (A whole worker process drained and exiting 0: the multi-host
rehearsal.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from arq.worker import Worker, func
from redis.asyncio import Redis

from shared.jobs import JobStatus
from shared.queue import (
    ANONYMIZE_FUNCTION,
    deserialize,
    enqueue_anonymize,
    open_pool,
    queue_client,
    serialize,
)
from shared.readiness import WorkerInfo, announce, ready_workers
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.test_job_finality import GatedAnonymizer, _state, _submit, _tuned, _wait_running
from workers.context import CTX_KEY, WorkerContext
from workers.main import STOP_SIGNALS, drain_on_signals
from workers.tasks import anonymize

pytestmark = pytest.mark.integration


@dataclass
class Running:
    worker: Worker
    state: WorkerContext
    runner: GatedAnonymizer
    queue: ArqRedis
    main: asyncio.Future[None]


@pytest.fixture
async def running(
    settings: Settings, store: ObjectStore, redis: Redis, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """A worker as ``build_worker`` makes it, its signal handlers installed on start-up, one job running."""
    drain_seconds = getattr(request, "param", 20)
    tuned = _tuned(settings, drain_seconds=drain_seconds)
    runner = GatedAnonymizer(blocked=True)
    state = _state(tuned, store, redis, runner)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = state
        await announce(
            redis,
            tuned.redis.prefix,
            WorkerInfo(id=state.id, providers=[], models=[], started_at="", host="test"),
        )
        drain_on_signals(ctx, state, worker)

    worker = Worker(
        functions=[func(anonymize, name=ANONYMIZE_FUNCTION, timeout=60, keep_result=0)],
        queue_name=tuned.redis.queue_name,
        redis_pool=queue_client(tuned.redis),
        on_startup=startup,
        poll_delay=0.02,
        handle_signals=True,
        job_completion_wait=drain_seconds,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    queue = await open_pool(tuned.redis)
    loop = asyncio.get_running_loop()
    main = asyncio.ensure_future(worker.async_run())
    try:
        yield Running(worker, state, runner, queue, main)
    finally:
        runner.release.set()
        if not main.done():
            worker.handle_sig(signal.SIGUSR1)
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()
        await queue.aclose()
        for signum in STOP_SIGNALS:  # the session's loop outlives this worker
            loop.remove_signal_handler(signum)


async def _run_one(running: Running) -> str:
    job = await _submit(running.state)
    assert await enqueue_anonymize(running.queue, job, running.state.settings.redis.queue_name)
    await _wait_running(running.state.jobs, job.id)
    return job.id


async def _stopped(running: Running) -> None:
    """The worker's main task ends (cancelled, as arq ends it on a signal) and it closes."""
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running.main, 30)
    await running.worker.close()  # waits for its jobs' tasks, as Worker.run does


async def _status(running: Running, job_id: str) -> tuple[JobStatus, ArqStatus]:
    record = await running.state.jobs.get(job_id)
    assert record is not None
    queue_name = running.state.settings.redis.queue_name
    return record.status, await Job(job_id, running.queue, _queue_name=queue_name).status()


async def test_sigterm_lets_the_running_job_finish_and_takes_no_new_one(
    running: Running, redis: Redis
) -> None:
    first = await _run_one(running)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.3)  # the drain has begun: a job queued now must wait for another worker
    later = await _submit(running.state)
    assert await enqueue_anonymize(running.queue, later, running.state.settings.redis.queue_name)
    # Out of /readyz at once: a draining worker is no capacity.
    prefix = running.state.settings.redis.prefix
    for _ in range(100):
        if running.state.id not in {w.id for w in await ready_workers(redis, prefix)}:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the draining worker still announces itself")
    await asyncio.sleep(0.3)
    assert not running.main.done(), "the worker stopped before its running job finished"
    running.runner.release.set()
    await _stopped(running)

    assert await _status(running, first) == (JobStatus.SUCCEEDED, ArqStatus.not_found)
    assert await _status(running, later.id) == (JobStatus.QUEUED, ArqStatus.queued)


@pytest.mark.parametrize("running", [1], indirect=True)
async def test_a_job_still_running_when_the_drain_ends_is_handed_back(running: Running) -> None:
    job_id = await _run_one(running)
    os.kill(os.getpid(), signal.SIGTERM)
    await _stopped(running)  # after the 1 s drain, the job still blocked
    assert running.state.stopping
    assert await _status(running, job_id) == (JobStatus.QUEUED, ArqStatus.queued)


async def test_a_second_signal_hands_back_at_once(running: Running) -> None:
    job_id = await _run_one(running)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert not running.main.done()
    os.kill(os.getpid(), signal.SIGINT)
    await _stopped(running)  # well before the 20 s drain
    assert running.state.stopping
    assert await _status(running, job_id) == (JobStatus.QUEUED, ArqStatus.queued)
