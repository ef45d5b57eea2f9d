"""Test helpers for running worker tasks in-process: the worker state start-up would build, and a stand-in
detector result for tests of the task around detection (the "result" is the input's bytes, an 8x8 PNG with
nothing found)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import cast

from redis.asyncio import Redis

from shared.jobs import ImageFormat
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from workers.context import Runner, WorkerContext
from workers.pipeline import AnonymizeResult


def passthrough_result(data: bytes, timings_ms: dict[str, float] | None = None) -> AnonymizeResult:
    return AnonymizeResult(
        image=data,
        content_type="image/png",
        format=ImageFormat.PNG,
        width=8,
        height=8,
        detections=[],
        regions=[],
        timings_ms=dict(timings_ms or {}),
    )


def worker_state(
    settings: Settings,
    redis: Redis,
    store: ObjectStore,
    anonymizer: Runner | None = None,
    *,
    transfer: ObjectTransfer | None = None,
    inference: ThreadPoolExecutor | None = None,
    name: str = "test",
) -> WorkerContext:
    """What a worker's start-up builds, for a test that runs a task in-process. ``anonymizer`` None: the
    task never detects (bulk expansion, sweeps)."""
    return WorkerContext(
        id=name,
        settings=settings,
        redis=redis,
        store=store,
        transfer=transfer or ObjectTransfer(store),
        jobs=JobStore(redis, settings.redis.prefix),
        anonymizer=cast(Runner, anonymizer),
        inference=inference or ThreadPoolExecutor(1),
    )
