"""Redis memory per job, the input of docs/capacity.md's Redis sizing: what a queued job holds (its record
and arq's queued job) and what a finished one leaves for its record's 24 h.

Starts a Redis of its own (the embedded one, AOF on, in a temp dir), then writes ``--jobs`` jobs the way
the gateway and the worker do, through Veil's own code (``JobStore`` and ``enqueue_anonymize``), and reads
``used_memory`` from ``INFO memory`` before and after:

* queued: the gateway's record + arq's job (``JobStore.put`` + ``enqueue_anonymize``);
* finished: a fresh Redis, each job started and finished as a worker does (``JobStore.start`` +
  ``JobStore.finish``), a record with ``--detections`` detections and a result; arq keeps nothing for a
  finished blur job (``keep_result`` 0).

    .venv/bin/python -m load.redis_job_memory --jobs 5000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from cli.embedded import start_redis
from shared.jobs import (
    BlurOptions,
    Detection,
    ImageFormat,
    InputInfo,
    JobRecord,
    JobRequest,
    JobStatus,
    ObjectRef,
    ResultInfo,
    utcnow,
)
from shared.jobstore import JobStore
from shared.queue import open_pool
from shared.settings import RedisSettings

PREFIX = "veil"
QUEUE = "veil:queue"


def _request(job_id: str) -> JobRequest:
    return JobRequest(
        id=job_id,
        owner=uuid.uuid4().hex[:16],
        source=ObjectRef(bucket="veil", key=f"uploads/{job_id}.jpg"),
        input=InputInfo(width=1920, height=1080, format=ImageFormat.JPEG),
        options=BlurOptions(),
    )


def _finished(request: JobRequest, detections: int) -> JobRecord:
    now = utcnow()
    record = JobRecord(
        id=request.id, owner=request.owner, input=request.input, options=request.options, attempts=1
    )
    record.status = JobStatus.SUCCEEDED
    record.started_at, record.finished_at = now, now
    record.detections = [
        Detection.model_validate(
            {"class": "plate", "score": 0.91, "box": [100 + i, 200, 260 + i, 250], "sources": ["platedet"]}
        )
        for i in range(detections)
    ]
    record.blurred_regions = [[96 + i, 190, 270 + i, 260] for i in range(detections)]
    key = f"results/{request.id}.jpg"
    record.result = ResultInfo(
        url=f"http://127.0.0.1:8333/veil/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        + "A" * 40
        + "&X-Amz-Date=20261130T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
        + "f" * 64,
        expires_at=now + timedelta(days=1),
        content_type="image/jpeg",
        key=key,
    )
    record.timings_ms = {
        "fetch": 3.1,
        "decode": 5.0,
        "detect_faces": 150.2,
        "detect_plates": 270.4,
        "store": 4,
    }
    return record


async def _used(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def _queued(url: str, jobs: int) -> float:
    redis = Redis.from_url(url)
    pool = await open_pool(RedisSettings(url=url, queue_name=QUEUE))
    store = JobStore(redis, PREFIX)
    before = await _used(redis)
    for _ in range(jobs):
        request = _request(uuid.uuid4().hex)
        await store.put(
            JobRecord(id=request.id, owner=request.owner, input=request.input, options=request.options)
        )
        await pool.enqueue_job(
            "anonymize", request.model_dump(mode="json"), _job_id=request.id, _queue_name=QUEUE
        )
    after = await _used(redis)
    await pool.aclose()
    await redis.aclose()
    return (after - before) / jobs


async def _finished_bytes(url: str, jobs: int, detections: int) -> float:
    redis = Redis.from_url(url)
    store = JobStore(redis, PREFIX)
    before = await _used(redis)
    for _ in range(jobs):
        request = _request(uuid.uuid4().hex)
        record = JobRecord(id=request.id, owner=request.owner, input=request.input, options=request.options)
        record.status = JobStatus.RUNNING
        await store.start(record, deadline=time.time() + 60)
        await store.finish(_finished(request, detections), count_success=True)
    after = await _used(redis)
    await redis.aclose()
    return (after - before) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=3, help="detections per finished record")
    args = parser.parse_args()
    for phase in ("queued", "finished"):
        with tempfile.TemporaryDirectory() as tmp:
            server = start_redis(Path(tmp))
            try:
                url = server.url
                if phase == "queued":
                    per_job = asyncio.run(_queued(url, args.jobs))
                else:
                    per_job = asyncio.run(_finished_bytes(url, args.jobs, args.detections))
            finally:
                server.stop()
        print(f"{phase}: {per_job:.0f} bytes of Redis memory per job ({args.jobs} jobs)")


if __name__ == "__main__":
    main()
