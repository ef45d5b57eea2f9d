"""Waiting for an inference lane is not detection time: with every lane busy on a large photo, a small
photo queued behind it still succeeds, although its wait was longer than ``detect_timeout_seconds``.
Real models (one lane), real Redis and S3, the task as arq runs it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pytest
from redis.asyncio import Redis

from shared.jobs import ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus, ObjectRef
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.fakes import worker_state
from tests.images import astronaut_bgr
from workers.context import CTX_KEY
from workers.engine import Engine, load_engine
from workers.tasks import anonymize

pytestmark = [pytest.mark.integration, pytest.mark.models]

DETECT_TIMEOUT = 2.0


class WatchedLanes(ThreadPoolExecutor):
    """The worker's lane pool, recording when each call was handed in and when a lane started it."""

    def __init__(self, lanes: int) -> None:
        super().__init__(lanes, thread_name_prefix="lane")
        self.calls: list[dict[str, float]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        times = {"submitted": time.monotonic()}
        self.calls.append(times)

        def timed() -> Any:
            times["started"] = time.monotonic()
            return fn(*args, **kwargs)

        return super().submit(timed)


@pytest.fixture(scope="module")
def one_lane_engine(settings: Settings) -> Iterator[Engine]:
    engine = load_engine(settings.worker.model_copy(update={"inference_lanes": 1}))
    yield engine
    engine.close()


def _jpeg(pixels: np.ndarray[Any, Any]) -> bytes:
    ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return bytes(buf.tobytes())


async def _queue(store: ObjectStore, jobs: JobStore, body: bytes, width: int, height: int) -> JobRequest:
    job_id = uuid.uuid4().hex
    await asyncio.to_thread(store.put, store.upload_key(job_id), body, "image/jpeg")
    request = JobRequest(
        id=job_id,
        owner=f"owner-{job_id}",
        source=ObjectRef(bucket=store.bucket, key=store.upload_key(job_id)),
        input=InputInfo(width=width, height=height, format=ImageFormat.JPEG),
    )
    await jobs.put(JobRecord(id=job_id, owner=request.owner, input=request.input, options=request.options))
    return request


async def test_a_small_photo_behind_a_large_one_is_not_timed_out_by_its_wait(
    settings: Settings, store: ObjectStore, redis: Redis, one_lane_engine: Engine
) -> None:
    jobs = JobStore(redis, settings.redis.prefix)
    tuned = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"detect_timeout_seconds": DETECT_TIMEOUT})}
    )
    lanes = WatchedLanes(1)
    state = worker_state(tuned, redis, store, one_lane_engine, inference=lanes, name="lane-test")
    ctx = {CTX_KEY: state, "job_try": 1}
    # ~44 megapixels: dozens of model passes (face and plate tiles), far more than DETECT_TIMEOUT of work.
    large = np.tile(astronaut_bgr(), (12, 14, 1))
    small = astronaut_bgr()[:256, 128:384]
    big_job = await _queue(store, jobs, _jpeg(large), large.shape[1], large.shape[0])
    small_job = await _queue(store, jobs, _jpeg(small), 256, 256)

    first = asyncio.ensure_future(anonymize(ctx, big_job.model_dump(mode="json")))
    while not lanes.calls:  # noqa: ASYNC110 - the large photo holds the only lane before the small one asks
        await asyncio.sleep(0.01)
    second = await anonymize(ctx, small_job.model_dump(mode="json"))
    await first

    record = await jobs.get(small_job.id)
    assert record is not None
    assert second["status"] == "succeeded", record.error
    assert record.status is JobStatus.SUCCEEDED and record.result is not None
    # The scenario happened: the small photo waited for the lane for longer than the detection timeout,
    # behind a photo that timed out itself.
    small_lane = lanes.calls[1]
    assert small_lane["started"] - small_lane["submitted"] > DETECT_TIMEOUT
    big = await jobs.get(big_job.id)
    assert big is not None and big.error is not None and big.error.code == "DETECTION_TIMEOUT"
    lanes.shutdown(wait=True)
