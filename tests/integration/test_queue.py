"""The queue through arq's public API only, against real Redis and real arq workers: a blur job queued by
:func:`shared.queue.enqueue_anonymize` reaches a worker's task as the request it was, a repeated id is
left alone, and two workers on one queue never run the same job."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from arq.worker import Worker, func

from shared.jobs import ImageFormat, InputInfo, JobRequest, ObjectRef
from shared.queue import (
    ANONYMIZE_FUNCTION,
    arq_redis_settings,
    deserialize,
    enqueue_anonymize,
    open_pool,
    serialize,
)
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[ArqRedis]:
    arq = await open_pool(settings.redis)
    yield arq
    await arq.aclose()


def _request() -> JobRequest:
    job_id = uuid.uuid4().hex
    return JobRequest(
        id=job_id,
        owner="k1",
        source=ObjectRef(bucket="veil", key=f"uploads/{job_id}"),
        input=InputInfo(width=4, height=3, format=ImageFormat.JPEG),
    )


def _worker(settings: Settings, queue: str, task: Any, *, max_jobs: int = 10) -> Worker:
    """A plain arq worker on ``queue`` running ``task`` as the blur function, as ``build_worker``'s
    (same serializer, no kept result), polling fast so the test is quick."""
    return Worker(
        functions=[func(task, name=ANONYMIZE_FUNCTION, keep_result=0, timeout=30)],
        queue_name=queue,
        redis_settings=arq_redis_settings(settings.redis),
        max_jobs=max_jobs,
        poll_delay=0.02,
        handle_signals=False,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )


async def _stop(worker: Worker, running: asyncio.Future[None]) -> None:
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await worker.close()


async def test_a_queued_job_is_what_arq_holds(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    request = _request()
    before_ms = time.time() * 1000
    assert await enqueue_anonymize(pool, request, queue) is True

    job = Job(request.id, pool, _queue_name=queue, _deserializer=deserialize)
    assert await job.status() is JobStatus.queued
    info = await job.info()
    assert info is not None
    assert info.function == ANONYMIZE_FUNCTION
    assert list(info.args) == [request.model_dump(mode="json")]  # JSON: the tuple comes back a list
    assert info.kwargs == {}
    assert info.job_try is None
    assert info.score is not None and before_ms - 1 <= info.score <= time.time() * 1000 + 1
    assert JobRequest.model_validate(info.args[0]) == request


async def test_an_id_arq_already_holds_is_left_alone(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    request = _request()
    assert await enqueue_anonymize(pool, request, queue) is True
    job = Job(request.id, pool, _queue_name=queue, _deserializer=deserialize)
    first = await job.info()
    changed = request.model_copy(update={"owner": "someone else"})
    assert await enqueue_anonymize(pool, changed, queue) is False
    again = await job.info()
    assert again is not None and first is not None
    assert again.args == first.args and again.score == first.score  # the first enqueue stands
    assert [queued.job_id for queued in await pool.queued_jobs(queue_name=queue)] == [request.id]


async def test_a_queued_job_is_picked_up_by_a_worker(pool: ArqRedis, settings: Settings) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def anonymize(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
        await received.put(payload)

    worker = _worker(settings, queue, anonymize)
    running = asyncio.ensure_future(worker.async_run())
    try:
        request = _request()
        assert await enqueue_anonymize(pool, request, queue)
        payload = await asyncio.wait_for(received.get(), 10)
        assert JobRequest.model_validate(payload) == request  # the contract survives the queue
        for _ in range(200):  # arq takes it off the queue once the task returned
            if await Job(request.id, pool, _queue_name=queue).status() is JobStatus.not_found:
                break
            await asyncio.sleep(0.02)
        assert await Job(request.id, pool, _queue_name=queue).status() is JobStatus.not_found
    finally:
        await _stop(worker, running)


async def test_two_workers_never_run_the_same_job(pool: ArqRedis, settings: Settings) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    runs: dict[str, list[str]] = {}

    def task_for(name: str) -> Any:
        async def anonymize(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
            runs.setdefault(payload["id"], []).append(name)
            await asyncio.sleep(0.05)  # long enough for the other worker's polls to see it running

        return anonymize

    # Small slots, so both workers keep polling while jobs are still queued and running.
    workers = [_worker(settings, queue, task_for(name), max_jobs=3) for name in ("a", "b")]
    requests = [_request() for _ in range(40)]
    for request in requests:
        assert await enqueue_anonymize(pool, request, queue)
    running = [asyncio.ensure_future(worker.async_run()) for worker in workers]
    try:
        deadline = time.monotonic() + 30
        while len(runs) < len(requests):
            assert time.monotonic() < deadline, f"{len(runs)} of {len(requests)} jobs ran"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a double run would show up by now
        statuses = [await Job(request.id, pool, _queue_name=queue).status() for request in requests]
        assert set(statuses) == {JobStatus.not_found}  # every job ended, none left for a later run
    finally:
        for worker, task in zip(workers, running, strict=True):
            await _stop(worker, task)
    assert set(runs) == {request.id for request in requests}
    assert {job_id: names for job_id, names in runs.items() if len(names) != 1} == {}
    assert {name for names in runs.values() for name in names} == {"a", "b"}  # both took part
