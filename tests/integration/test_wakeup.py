"""Idle workers wait on a Redis channel instead of polling fast: enqueues announce themselves, a waiting
worker starts a new job at once, and the slow timer stays as the safety net."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import func

from shared.jobs import ImageFormat, InputInfo, JobRequest, ObjectRef
from shared.queue import (
    announce_queued,
    arq_redis_settings,
    deserialize,
    enqueue_anonymize,
    open_pool,
    queued_channel,
    serialize,
)
from shared.settings import Settings
from workers.main import VeilWorker
from workers.wakeup import QueueWakeup

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[ArqRedis]:
    arq = await open_pool(settings.redis)
    yield arq
    await arq.aclose()


async def _until(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_enqueue_script_announces_the_job(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    job_id = uuid.uuid4().hex
    request = JobRequest(
        id=job_id,
        owner="k1",
        source=ObjectRef(bucket="veil", key=f"uploads/{job_id}"),
        input=InputInfo(width=4, height=3, format=ImageFormat.JPEG),
    )
    async with pool.pubsub() as pubsub:
        await pubsub.subscribe(queued_channel(queue))
        subscribed = await pubsub.get_message(timeout=2)
        assert subscribed is not None and subscribed["type"] == "subscribe"
        assert await enqueue_anonymize(pool, request, queue)
        message = await pubsub.get_message(timeout=2)
        assert message is not None and message["data"] == job_id.encode()
        # A repeated enqueue is a no-op, and announces nothing.
        assert not await enqueue_anonymize(pool, request, queue)
        assert await pubsub.get_message(timeout=0.3) is None


async def test_wait_returns_on_an_announcement_and_times_out_without_one(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    wakeup = QueueWakeup(pool, queued_channel(queue), idle_poll_s=0.4, unsubscribed_poll_s=0.05)
    wakeup.start()
    try:
        await _until(lambda: wakeup.listening)
        await wakeup.wait()  # the poke of the subscription itself

        started = time.monotonic()
        await wakeup.wait()
        assert 0.3 < time.monotonic() - started < 2.0  # nothing announced: the idle timer

        waiting = asyncio.ensure_future(wakeup.wait())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await announce_queued(pool, queue, "some-job")
        await asyncio.wait_for(waiting, 2.0)
        assert time.monotonic() - started < 0.3

        wakeup.poke()  # a poke while the caller was busy is not lost
        started = time.monotonic()
        await wakeup.wait()
        assert time.monotonic() - started < 0.1
    finally:
        await wakeup.close()
    assert not wakeup.listening


async def _noted(ctx: dict[str, Any], key: str) -> None:
    await ctx["redis"].set(key, b"done", ex=60)


async def test_an_idle_worker_starts_an_announced_job_without_waiting_for_its_timer(
    pool: ArqRedis, settings: Settings
) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    worker = VeilWorker(
        functions=[func(_noted, name="noted")],
        queue_name=queue,
        redis_settings=arq_redis_settings(settings.redis),
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    worker.idle_poll_s = 30.0  # the timer alone would take this long
    running = asyncio.ensure_future(worker.async_run())
    try:
        await _until(lambda: worker._wakeup is not None and worker._wakeup.listening)
        await asyncio.sleep(0.1)  # into its idle wait
        key = f"test:noted:{uuid.uuid4().hex}"
        started = time.monotonic()
        await pool.enqueue_job("noted", key, _queue_name=queue)
        await announce_queued(pool, queue, "noted")
        while await pool.get(key) is None:
            assert time.monotonic() - started < 5.0, "the job waited for the idle timer"
            await asyncio.sleep(0.02)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await worker.close()
