"""Every job ends in a final state, leaves no original behind and no result if it failed: also when arq's
job timeout cancels the task, when arq gave up on a job whose runs all crashed (the sweeper), when a late
run ends after the sweeper failed its job, and when the store is down as a job ends (deletions are kept in
Redis and retried). Real Redis and SeaweedFS; the detectors are stand-ins (Runner) that block on demand."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from arq.worker import Worker, func
from redis.asyncio import Redis

from cli.embedded import free_port
from shared.bulk import BulkRecord, BulkSource, BulkStatus, BulkStore
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus, ObjectRef
from shared.jobstore import JobStore, RunningJob
from shared.queue import (
    ANONYMIZE_FUNCTION,
    arq_redis_settings,
    deserialize,
    enqueue_anonymize,
    open_pool,
    serialize,
)
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from tests.fakes import passthrough_result, worker_state
from workers.context import CTX_KEY, WorkerContext
from workers.main import STOP_SIGNALS, watch_stop_signals
from workers.pipeline import AnonymizeResult
from workers.sweeper import sweep
from workers.tasks import anonymize

pytestmark = pytest.mark.integration


class GatedAnonymizer:
    """Returns the input as the "blurred" image once ``release`` is set (at once if it is set already)."""

    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __init__(self, *, blocked: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        if not blocked:
            self.release.set()

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        self.started.set()
        self.release.wait(30)
        return passthrough_result(data)


class HangsAfterPut(ObjectTransfer):
    """The real store; the result PUT lands, then the call hangs (a store stalling before it answers)."""

    async def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None) -> None:
        await super().put(key, body, content_type, bucket)
        await asyncio.sleep(60)


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), 127, np.uint8))
    assert ok
    return bytes(buf.tobytes())


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await open_pool(settings.redis)
    yield pool
    await pool.aclose()


def _tuned(settings: Settings, **worker: Any) -> Settings:
    """Its own queue name per test: the sweeper asks arq about its jobs, and nothing else runs there."""
    redis = settings.redis.model_copy(update={"queue_name": f"veil:test-queue:{uuid.uuid4().hex[:8]}"})
    return settings.model_copy(update={"redis": redis, "worker": settings.worker.model_copy(update=worker)})


def _state(settings: Settings, store: ObjectStore, redis: Redis, anonymizer: Any, **kw: Any) -> WorkerContext:
    return worker_state(settings, redis, store, anonymizer, transfer=kw.get("transfer"))


async def _submit(state: WorkerContext, **request: Any) -> JobRequest:
    store = state.store
    job_id = uuid.uuid4().hex
    await asyncio.to_thread(store.put, store.upload_key(job_id), _png(), "image/png")
    job = JobRequest(
        id=job_id,
        owner=f"owner-{job_id}",
        source=ObjectRef(bucket=store.bucket, key=store.upload_key(job_id)),
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        **request,
    )
    await state.jobs.put(JobRecord(id=job_id, owner=job.owner, input=job.input, options=job.options))
    return job


def _results(store: ObjectStore, job_id: str) -> list[str]:
    keys = [store.result_key(job_id, ext) for ext in ("jpg", "png", "webp")]
    return [key for key in keys if store.exists(key)]


async def _indexed(redis: Redis, jobs: JobStore, job_id: str) -> bool:
    return await redis.zscore(jobs.deadlines_key, job_id) is not None


async def _wait_running(jobs: JobStore, job_id: str) -> None:
    for _ in range(500):
        record = await jobs.get(job_id)
        if record is not None and record.status is JobStatus.RUNNING:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the job never started")


async def test_arq_timeout_fails_the_job_and_removes_its_original(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    runner = GatedAnonymizer(blocked=True)
    state = _state(_tuned(settings), store, redis, runner)
    job = await _submit(state)
    try:
        with pytest.raises(TimeoutError):  # what arq does with its job timeout
            await asyncio.wait_for(anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json")), 1)
    finally:
        runner.release.set()
    record = await state.jobs.get(job.id)
    assert record is not None
    assert record.status is JobStatus.FAILED, record.status
    assert record.error is not None and record.error.code == "JOB_TIMEOUT"
    assert record.finished_at is not None and record.result is None
    assert not store.exists(job.source.key)
    assert _results(store, job.id) == []
    assert not await _indexed(redis, state.jobs, job.id)


async def test_a_timeout_after_the_result_was_written_deletes_the_result(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    state = _state(_tuned(settings), store, redis, GatedAnonymizer(), transfer=HangsAfterPut(store))
    job = await _submit(state)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json")), 1)
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "JOB_TIMEOUT"
    assert record.result is None
    assert not store.exists(job.source.key)
    # The result PUT never returned, so another write of it may still be on its way to the store: its
    # deletion waits in Redis (a job timeout) for the sweeper rather than racing it now.
    result = store.result_key(job.id, "png")
    assert await redis.zscore(state.jobs.deletions_key, f"{store.bucket}/{result}") is not None
    await sweep(state, queue, now=time.time() + state.settings.worker.job_timeout_seconds + 1)
    assert _results(store, job.id) == []  # a failed job never leaves a result object
    assert await redis.zscore(state.jobs.deletions_key, f"{store.bucket}/{result}") is None


async def test_a_worker_stopping_hands_its_job_back(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    # On SIGTERM arq cancels the running jobs and runs them again: not a timeout, nothing to fail.
    runner = GatedAnonymizer(blocked=True)
    state = _state(_tuned(settings), store, redis, runner)
    job = await _submit(state)
    run = asyncio.ensure_future(anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json")))
    await _wait_running(state.jobs, job.id)
    state.stopping = True
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    runner.release.set()
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.QUEUED and record.error is None
    assert store.exists(job.source.key)  # the next run needs it
    assert await _indexed(redis, state.jobs, job.id)  # if no run comes, the sweeper ends it


async def test_sigterm_to_a_worker_hands_its_running_job_back_to_arq(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    # The whole path: a real arq worker runs the job, SIGTERM reaches the process, the handler installed
    # on start-up (workers.main.watch_stop_signals) marks the worker stopping and calls arq's own.
    runner = GatedAnonymizer(blocked=True)
    tuned = _tuned(settings)
    state = _state(tuned, store, redis, runner)
    queue_name = tuned.redis.queue_name

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = state
        watch_stop_signals(state, worker.handle_sig)

    worker = Worker(
        functions=[func(anonymize, name=ANONYMIZE_FUNCTION, timeout=30, keep_result=0)],
        queue_name=queue_name,
        redis_settings=arq_redis_settings(tuned.redis),
        on_startup=startup,
        poll_delay=0.02,
        handle_signals=True,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    job = await _submit(state)
    assert await enqueue_anonymize(queue, job, queue_name)
    loop = asyncio.get_running_loop()
    running = asyncio.ensure_future(worker.async_run())
    try:
        await _wait_running(state.jobs, job.id)
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
        runner.release.set()
        await worker.close()  # waits for the cancelled job to record its hand-back
    finally:
        runner.release.set()
        for signum in STOP_SIGNALS:  # the session's loop outlives this worker
            loop.remove_signal_handler(signum)
    assert state.stopping
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.QUEUED and record.error is None
    assert store.exists(job.source.key)  # the next run needs it
    assert await _indexed(redis, state.jobs, job.id)  # if no run comes, the sweeper ends it
    # arq runs it again: still in its queue, no longer marked as running anywhere.
    assert await Job(job.id, queue, _queue_name=queue_name).status() is ArqStatus.queued


async def test_the_sweeper_fails_a_job_arq_gave_up_on(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    # A run that crashed after writing its result, as arq's last try: arq drops the job without calling us.
    state = _state(_tuned(settings), store, redis, GatedAnonymizer())
    job = await _submit(state, callback_url="https://example.com/hook")
    record = await state.jobs.get(job.id)
    assert record is not None
    record.status, record.started_at, record.attempts = JobStatus.RUNNING, record.created_at, 3
    running = RunningJob(original=job.source, callback_url=job.callback_url)
    assert await state.jobs.start(record, deadline=time.time() - 1, running=running) is None
    await asyncio.to_thread(store.put, store.result_key(job.id, "png"), _png(), "image/png")

    report = await sweep(state, queue)

    assert report["failed"] == 1
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "JOB_TIMEOUT"
    assert record.finished_at is not None
    assert _results(store, job.id) == [] and not store.exists(job.source.key)
    assert not await _indexed(redis, state.jobs, job.id)
    assert await redis.zscore(state.jobs.deletions_key, f"{store.bucket}/{job.source.key}") is None
    # As for any failure: the owner's webhook is queued.
    webhook = Job(f"webhook:{job.id}", queue, _queue_name=state.settings.redis.queue_name)
    assert await webhook.status() is ArqStatus.queued
    # A second sweep finds nothing to do.
    again = await sweep(state, queue)
    assert again["failed"] == 0


async def test_a_bulk_child_the_sweeper_fails_is_counted_at_once(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    # Its bulk job learns of it from the sweep, not only when someone next reads the bulk job.
    state = _state(_tuned(settings), store, redis, GatedAnonymizer())
    job = await _submit(state)
    record = await state.jobs.get(job.id)
    assert record is not None
    record.status, record.started_at, record.attempts = JobStatus.RUNNING, record.created_at, 3
    assert await state.jobs.start(record, deadline=time.time() - 1, running=RunningJob()) is None
    bulks = BulkStore(redis, state.settings.redis.prefix)
    bulk_id = uuid.uuid4().hex
    source = BulkSource(bucket="client-photos", prefix="in/")
    await bulks.put(
        BulkRecord(id=bulk_id, owner=job.owner, status=BulkStatus.RUNNING, source=source, total=1)
    )
    await bulks.progress.started(bulk_id, job.id)

    assert (await sweep(state, queue))["failed"] == 1

    counters = await bulks.progress.counters(bulk_id)
    assert (counters.failed, counters.running) == (1, 0)
    assert counters.finished_ms is not None  # its only child: the bulk job is finished


@pytest.mark.parametrize("defer_by", [None, 60], ids=["queued", "deferred"])
async def test_the_sweeper_leaves_a_job_arq_still_holds(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis, defer_by: int | None
) -> None:
    state = _state(_tuned(settings), store, redis, GatedAnonymizer())
    job = await _submit(state)
    record = await state.jobs.get(job.id)
    assert record is not None
    record.status = JobStatus.RUNNING
    await state.jobs.start(record, deadline=time.time() - 1, running=RunningJob(original=job.source))
    # arq holds it: queued again (a crashed run's job, or one handed back) or deferred (a retry).
    queue_name = state.settings.redis.queue_name
    assert await queue.enqueue_job(
        ANONYMIZE_FUNCTION,
        job.model_dump(mode="json"),
        _job_id=job.id,
        _queue_name=queue_name,
        _defer_by=defer_by,
    )
    report = await sweep(state, queue)
    assert report["failed"] == 0
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.RUNNING
    deadline = await redis.zscore(state.jobs.deadlines_key, job.id)
    assert deadline is not None and deadline > time.time()  # looked at again later
    assert store.exists(job.source.key)


async def test_the_sweeper_does_not_put_back_a_job_that_ended(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    # The sweeper moves the deadline of a job arq holds; if the job ended meanwhile it stays out.
    state = _state(_tuned(settings), store, redis, GatedAnonymizer())
    await state.jobs.postpone("never-started", time.time() + 60)
    assert not await _indexed(redis, state.jobs, "never-started")


async def test_a_late_run_cannot_flip_a_job_the_sweeper_failed(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    runner = GatedAnonymizer(blocked=True)
    state = _state(_tuned(settings), store, redis, runner)
    job = await _submit(state, delete_source=False)
    run = asyncio.ensure_future(anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json")))
    await _wait_running(state.jobs, job.id)
    assert await asyncio.to_thread(runner.started.wait, 10)
    # The run outlives its deadline (a worker whose clock or event loop stalled): the sweeper fails it.
    await redis.zadd(state.jobs.deadlines_key, {job.id: time.time() - 1})
    assert (await sweep(state, queue))["failed"] == 1
    runner.release.set()
    outcome = await run
    assert outcome["status"] == "failed"
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "JOB_TIMEOUT"
    assert record.result is None
    assert _results(store, job.id) == []  # the late run's result was taken back
    assert await redis.hget(f"{settings.redis.prefix}:usage:{job.owner}", "images") is None  # type: ignore[misc]
    assert store.exists(job.source.key)  # not an upload: never deleted


async def test_deletions_wait_in_redis_while_the_store_is_down(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    dead = ObjectStore(settings.s3.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    tuned = _tuned(settings, max_tries=1)
    # Its own key prefix: other tests' deletions (into stores and buckets long gone) must not be due first.
    own = tuned.redis.model_copy(update={"prefix": f"veil-test-{uuid.uuid4().hex[:8]}"})
    tuned = tuned.model_copy(update={"redis": own})
    up = _state(tuned, store, redis, GatedAnonymizer())
    down = _state(tuned, dead, redis, GatedAnonymizer())
    job = await _submit(up)
    # The store goes away as the job runs: the job fails (its last try) and its original cannot be deleted.
    outcome = await anonymize({CTX_KEY: down, "job_try": 1}, job.model_dump(mode="json"))
    assert outcome["status"] == "failed"
    record = await up.jobs.get(job.id)
    assert record is not None and record.error is not None and record.error.code == "STORE_UNAVAILABLE"
    assert store.exists(job.source.key)
    member = f"{store.bucket}/{job.source.key}"
    assert await redis.zscore(up.jobs.deletions_key, member) is not None

    # A sweep while the store is still down keeps it for later.
    await sweep(down, queue, now=time.time() + 3600)
    assert await redis.zscore(up.jobs.deletions_key, member) is not None
    # Once the store is back, a sweep deletes it.
    report = await sweep(up, queue, now=time.time() + 7200)
    assert report["deleted"] >= 1
    assert not store.exists(job.source.key)
    assert await redis.zscore(up.jobs.deletions_key, member) is None
