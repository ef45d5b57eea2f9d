"""The worker task against real Redis and S3, with detectors that fail or hang: the job fails with a clear
code, nothing is written under results/, the original is deleted, and re-runs never double-count."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from redis.asyncio import Redis

from shared.errors import DetectionError
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus, ObjectRef
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.fakes import passthrough_result, worker_state
from workers.context import CTX_KEY
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize

pytestmark = pytest.mark.integration


class BrokenAnonymizer:
    """Stands in for the detectors only; Redis and S3 stay real."""

    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        if self.mode == "hang":
            time.sleep(2)
        raise DetectionError("detector exploded")


class CountingAnonymizer:
    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __init__(self) -> None:
        self.calls = 0

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        self.calls += 1
        return passthrough_result(data)


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), 127, np.uint8))
    assert ok
    return buf.tobytes()


async def _setup(
    settings: Settings, store: ObjectStore, redis: Redis, anonymizer: Any, **worker: Any
) -> tuple[dict[str, Any], JobRequest, JobStore]:
    job_id = uuid.uuid4().hex
    store.put(store.upload_key(job_id), _png(), "image/png")
    request = JobRequest(
        id=job_id,
        owner=f"owner-{job_id}",
        source=ObjectRef(bucket=store.bucket, key=store.upload_key(job_id)),
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
    )
    jobs = JobStore(redis, settings.redis.prefix)
    await jobs.put(JobRecord(id=job_id, owner=request.owner, input=request.input, options=request.options))
    tuned = settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})
    state = worker_state(tuned, redis, store, anonymizer)
    return {CTX_KEY: state, "job_try": 1}, request, jobs


def _results_for(store: ObjectStore, job_id: str) -> list[str]:
    return [
        store.result_key(job_id, ext)
        for ext in ("jpg", "png", "webp")
        if store.exists(store.result_key(job_id, ext))
    ]


async def test_detector_error_fails_closed(settings: Settings, store: ObjectStore, redis: Redis) -> None:
    ctx, request, jobs = await _setup(settings, store, redis, BrokenAnonymizer("raise"))
    outcome = await anonymize(ctx, request.model_dump(mode="json"))
    record = await jobs.get(request.id)
    assert outcome["status"] == "failed"
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "DETECTION_FAILED"
    assert record.result is None and _results_for(store, request.id) == []
    assert not store.exists(request.source.key)  # the original is deleted when the job ends


async def test_detector_timeout_fails_closed(settings: Settings, store: ObjectStore, redis: Redis) -> None:
    ctx, request, jobs = await _setup(
        settings, store, redis, BrokenAnonymizer("hang"), detect_timeout_seconds=0.2
    )
    await anonymize(ctx, request.model_dump(mode="json"))
    record = await jobs.get(request.id)
    assert record is not None and record.error is not None
    assert record.error.code == "DETECTION_TIMEOUT"
    assert _results_for(store, request.id) == []


async def test_unreadable_payload_is_not_retried(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    ctx, _, _ = await _setup(settings, store, redis, CountingAnonymizer())
    outcome = await anonymize(ctx, {"version": 99, "id": "x"})
    assert outcome == {"status": "failed", "code": "BAD_PAYLOAD"}


async def test_rerun_after_crash_overwrites_and_counts_once(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    anonymizer = CountingAnonymizer()
    ctx, request, jobs = await _setup(settings, store, redis, anonymizer)
    keep = request.model_copy(update={"delete_source": False})
    payload = keep.model_dump(mode="json")

    first = await anonymize(ctx, payload)
    assert first["status"] == "succeeded"
    # A crash after the result was written but before arq recorded completion: the record says running.
    record = await jobs.get(request.id)
    assert record is not None
    record.status = JobStatus.RUNNING
    await jobs.put(record)
    second = await anonymize(ctx, payload)
    assert second["status"] == "succeeded"
    # Once finished, a duplicate delivery is a no-op.
    third = await anonymize(ctx, payload)
    assert third.get("repeat") is True

    assert anonymizer.calls == 2
    assert _results_for(store, request.id) == [store.result_key(request.id, "png")]
    usage = await redis.hget(f"{settings.redis.prefix}:usage:{request.owner}", "images")  # type: ignore[misc]
    assert usage == b"1"
