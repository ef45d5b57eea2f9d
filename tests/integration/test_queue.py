"""The one-round-trip enqueue writes exactly what arq's own enqueue would, against real Redis: arq reads
the job back, a repeated id is left alone, and the job's record rides in the same pipeline."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, JobStatus

from shared.jobs import ImageFormat, InputInfo, JobRecord, JobRequest, ObjectRef
from shared.jobs import JobStatus as VeilJobStatus
from shared.jobstore import JobStore
from shared.queue import ANONYMIZE_FUNCTION, deserialize, enqueue_anonymize, open_pool, stage_anonymize
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


async def test_arq_reads_the_job_it_would_have_written(pool: ArqRedis) -> None:
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
    # Unstarted jobs expire as arq's do: a day (the pool's expires_extra_ms) after queueing.
    ttl_ms = await pool.pttl(job_key_prefix + request.id)
    assert pool.expires_extra_ms - 60_000 < ttl_ms <= pool.expires_extra_ms


async def test_same_stored_job_as_arqs_enqueue_job(pool: ArqRedis) -> None:
    ours, theirs = _request(), _request()
    queue = f"test:queue:{uuid.uuid4().hex}"
    await enqueue_anonymize(pool, ours, queue)
    await pool.enqueue_job(
        ANONYMIZE_FUNCTION, theirs.model_dump(mode="json"), _job_id=theirs.id, _queue_name=queue
    )
    stored = [deserialize(await pool.get(job_key_prefix + r.id)) for r in (ours, theirs)]
    for job in stored:
        job.pop("et")  # the enqueue time
        job["a"][0].pop("id"), job["a"][0].pop("source"), job["a"][0].pop("created_at")
    assert stored[0] == stored[1]
    ttls = [await pool.pttl(job_key_prefix + r.id) for r in (ours, theirs)]
    assert abs(ttls[0] - ttls[1]) < 60_000


async def test_an_id_arq_already_holds_is_left_alone(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    request = _request()
    assert await enqueue_anonymize(pool, request, queue) is True
    raw = await pool.get(job_key_prefix + request.id)
    assert await enqueue_anonymize(pool, request, queue) is False
    assert await pool.get(job_key_prefix + request.id) == raw
    assert await pool.zcard(queue) == 1

    # A finished job's kept result also blocks a re-enqueue, as in arq.
    done = _request()
    await pool.set(result_key_prefix + done.id, b"{}")
    assert await enqueue_anonymize(pool, done, queue) is False
    assert await pool.zcard(queue) == 1


async def test_record_and_job_in_one_pipeline(pool: ArqRedis, settings: Settings) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    jobs = JobStore(pool, settings.redis.prefix)
    request = _request()
    record = JobRecord(id=request.id, owner=request.owner, input=request.input, options=request.options)
    async with pool.pipeline(transaction=True) as pipe:
        jobs.stage_put(pipe, record)
        stage_anonymize(pipe, request, queue, expires_extra_ms=pool.expires_extra_ms)
        results = await pipe.execute()
    assert results[-1] == 1
    stored = await jobs.get(request.id)
    assert stored is not None and stored.status is VeilJobStatus.QUEUED
    assert await pool.zscore(queue, request.id) is not None
