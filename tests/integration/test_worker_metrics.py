"""The worker's metrics as the task records them: a job that ended is counted by outcome and error code, its
stages and queue wait are observed, and it is in flight while it runs. Real Redis and S3, stand-in
detectors. The registry is the process's: every check is on what one job added."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import cv2
import numpy as np
import pytest
from redis.asyncio import Redis

from shared.errors import DetectionError
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, ObjectRef
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.fakes import passthrough_result, worker_state
from workers.context import CTX_KEY
from workers.metrics import REGISTRY, STAGES
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize

pytestmark = pytest.mark.integration

PIPELINE_MS = {"decode": 2.0, "detect_faces": 30.0, "detect_plates": 40.0, "blur": 3.0, "encode": 4.0}


class StandInAnonymizer:
    """Returns the image as it came, with the pipeline's timings; ``fail``: raises as a detector would;
    ``gate``: waits for it to open, having set ``entered``."""

    def __init__(self, *, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.providers = ["CPUExecutionProvider"]
        self.fail, self.gate, self.entered = fail, gate, threading.Event()

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.fail:
            raise DetectionError("detector exploded")
        return passthrough_result(data, PIPELINE_MS)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    values = {f"{stage}_count": sample("veil_job_stage_seconds_count", stage=stage) for stage in STAGES}
    values |= {f"{stage}_sum": sample("veil_job_stage_seconds_sum", stage=stage) for stage in STAGES}
    values["queue_wait"] = sample("veil_job_queue_wait_seconds_count")
    values["succeeded"] = sample("veil_jobs_total", outcome="succeeded", code="")
    values["failed"] = sample("veil_jobs_total", outcome="failed", code="DETECTION_FAILED")
    values["in_flight"] = sample("veil_jobs_in_flight")
    return values


async def _job(
    settings: Settings, store: ObjectStore, redis: Redis, anonymizer: StandInAnonymizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's ctx and one queued job's payload."""
    job_id = uuid.uuid4().hex
    ok, png = cv2.imencode(".png", np.full((8, 8, 3), 127, np.uint8))
    assert ok
    await asyncio.to_thread(store.put, store.upload_key(job_id), png.tobytes(), "image/png")
    request = JobRequest(
        id=job_id,
        owner=f"owner-{job_id}",
        source=ObjectRef(bucket=store.bucket, key=store.upload_key(job_id)),
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
    )
    jobs = JobStore(redis, settings.redis.prefix)
    await jobs.put(JobRecord(id=job_id, owner=request.owner, input=request.input, options=request.options))
    state = worker_state(settings, redis, store, anonymizer, name="metrics-test")
    return {CTX_KEY: state, "job_try": 1}, request.model_dump(mode="json")


async def test_a_finished_job_is_counted_and_its_stages_observed(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    ctx, payload = await _job(settings, store, redis, StandInAnonymizer())
    before = snapshot()
    assert (await anonymize(ctx, payload))["status"] == "succeeded"
    after = snapshot()

    assert after["succeeded"] == before["succeeded"] + 1
    assert after["failed"] == before["failed"]
    assert after["queue_wait"] == before["queue_wait"] + 1
    for stage in STAGES:  # fetch and store timed by the task, the rest by the pipeline
        assert after[f"{stage}_count"] == before[f"{stage}_count"] + 1, stage
    for stage, ms in PIPELINE_MS.items():
        assert after[f"{stage}_sum"] - before[f"{stage}_sum"] == pytest.approx(ms / 1000), stage
    assert after["in_flight"] == before["in_flight"]


async def test_a_failed_job_is_counted_by_its_error_code(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    ctx, payload = await _job(settings, store, redis, StandInAnonymizer(fail=True))
    before = snapshot()
    assert (await anonymize(ctx, payload))["status"] == "failed"
    after = snapshot()

    assert after["failed"] == before["failed"] + 1
    assert after["succeeded"] == before["succeeded"]
    assert after["queue_wait"] == before["queue_wait"] + 1
    # No stage finished: nothing observed (a failed record carries no timings).
    assert after["detect_faces_count"] == before["detect_faces_count"]


async def test_a_running_job_is_in_flight(settings: Settings, store: ObjectStore, redis: Redis) -> None:
    gate = threading.Event()
    anonymizer = StandInAnonymizer(gate=gate)
    ctx, payload = await _job(settings, store, redis, anonymizer)
    before = sample("veil_jobs_in_flight")
    running = asyncio.ensure_future(anonymize(ctx, payload))
    try:
        assert await asyncio.to_thread(anonymizer.entered.wait, 30)
        assert sample("veil_jobs_in_flight") == before + 1
    finally:
        gate.set()
    assert (await running)["status"] == "succeeded"
    assert sample("veil_jobs_in_flight") == before
