"""The store stops answering for longer than the job timeout while jobs run (SIGSTOP on its own ``weed``
process, then SIGCONT): no job is left ``running``, every one ends succeeded or failed with a code, no
original is left under the uploads prefix once the store is back, and no failed job has a result object.

Everything is real and this test's own: Redis, SeaweedFS, the gateway and a worker process (``python -m
gateway`` / ``python -m workers``, as ``veil up`` runs them), with a short job timeout and sweep interval.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from redis.asyncio import Redis

from cli.embedded import (
    RedisServer,
    SeaweedServer,
    Service,
    free_port,
    s3_environment,
    start_redis,
    start_seaweed,
)
from cli.stack import start_veil_processes, wait_ready
from shared.apikeys import ApiKeyStore
from shared.settings import S3Settings
from shared.storage import ObjectStore
from tests.images import astronaut_bgr

pytestmark = [pytest.mark.integration, pytest.mark.models]

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT = 8
PAUSE = 3 * JOB_TIMEOUT  # well past the job timeout: every job in flight hits it
JOBS = 6
BUCKET = "veil-fault"


@dataclass
class Stack:
    url: str
    redis: RedisServer
    weed: SeaweedServer
    services: list[Service]
    store: ObjectStore
    logs: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    redis = start_redis(tmp_path / "redis")
    weed = start_seaweed(tmp_path / "weed")
    port = free_port()
    env = {
        **os.environ,
        **s3_environment(weed),
        "VEIL_REDIS__URL": redis.url,
        "VEIL_S3__BUCKET": BUCKET,
        "VEIL_GATEWAY__PORT": str(port),
        "VEIL_WORKER__MODEL_DIR": str(REPO / ".cache" / "models"),
        "VEIL_WORKER__PROVIDERS": "CPUExecutionProvider",
        "VEIL_WORKER__JOB_TIMEOUT_SECONDS": str(JOB_TIMEOUT),
        "VEIL_WORKER__SWEEP_INTERVAL_SECONDS": "2",
    }
    logs = tmp_path / "logs"
    services: list[Service] = []
    try:
        services = start_veil_processes(env, logs)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 180, services)
        settings = S3Settings(
            endpoint_url=weed.s3_url, access_key_id="veil", secret_access_key="veil-secret", bucket=BUCKET
        )
        yield Stack(url, redis, weed, services, ObjectStore(settings), logs)
    finally:
        if weed.proc.poll() is None:
            os.kill(weed.proc.pid, signal.SIGCONT)  # never leave it stopped
        for service in reversed(services):
            service.stop()
        weed.stop()
        redis.stop()


def _photo() -> bytes:
    # 2048 px: a couple of seconds of detection on a small CPU, so jobs are in flight when the store stops.
    ok, buf = cv2.imencode(".jpg", np.tile(astronaut_bgr(), (4, 4, 1)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf.tobytes())


async def _key(redis_url: str) -> str:
    redis = Redis.from_url(redis_url)
    try:
        token, _ = await ApiKeyStore(redis, "veil").create("faults")
        return token
    finally:
        await redis.aclose()


async def _submit(http: aiohttp.ClientSession, key: str, body: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("image", body, filename="photo.jpg")
    async with http.post("/v1/jobs", data=form, headers={"X-API-Key": key}) as response:
        created: dict[str, Any] = await response.json()
        assert response.status == 202, created
        return str(created["id"])


async def _jobs(http: aiohttp.ClientSession, key: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    jobs = {}
    for job_id in ids:
        async with http.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}) as response:
            jobs[job_id] = await response.json()
    return jobs


def _left_behind(store: ObjectStore, jobs: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(originals under the uploads prefix, result objects of failed jobs)."""
    uploads, _ = store.list_keys(BUCKET, store.settings.uploads_prefix, 1000)
    results, _ = store.list_keys(BUCKET, store.settings.results_prefix, 1000)
    failed = {job_id for job_id, job in jobs.items() if job["status"] == "failed"}
    stray = [key for key in results if key.rsplit("/", 1)[-1].split(".")[0] in failed]
    return uploads, stray


async def _pending_deletions(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    try:
        return int(await redis.zcard("veil:deletions"))
    finally:
        await redis.aclose()


async def _run(stack: Stack) -> None:
    key = await _key(stack.redis.url)
    photo = _photo()
    async with aiohttp.ClientSession(stack.url) as http:
        ids = [await _submit(http, key, photo) for _ in range(JOBS)]
        # The store stops as soon as the worker is on the jobs.
        while not any(job["status"] == "running" for job in (await _jobs(http, key, ids)).values()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        os.kill(stack.weed.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(PAUSE)
            during = await _jobs(http, key, ids)
        finally:
            os.kill(stack.weed.proc.pid, signal.SIGCONT)

        # Recovery: jobs end and the sweeper retries the deletions the store refused while it was away.
        give_up = time.monotonic() + 180
        while True:
            jobs = await _jobs(http, key, ids)
            finished = all(job["status"] in ("succeeded", "failed") for job in jobs.values())
            uploads, stray = await asyncio.to_thread(_left_behind, stack.store, jobs)
            pending = await _pending_deletions(stack.redis.url)
            if (finished and not uploads and not stray and not pending) or time.monotonic() > give_up:
                break
            await asyncio.sleep(1)

    def summary(snapshot: dict[str, dict[str, Any]]) -> list[str]:
        return [f"{job['status']}:{(job.get('error') or {}).get('code', '-')}" for job in snapshot.values()]

    print(f"\nat SIGCONT ({PAUSE}s paused): {sorted(summary(during))}")
    print(f"after recovery: {sorted(summary(jobs))}; uploads left {uploads}; failed jobs' results {stray}")
    print(f"deletions still pending in Redis: {pending}")
    assert all(job["status"] in ("succeeded", "failed") for job in jobs.values()), summary(jobs)
    for job in jobs.values():
        if job["status"] == "failed":
            assert job["error"]["code"], job
            assert job["result"] is None, job
    assert uploads == [], "originals left behind after the store came back"
    assert stray == [], "failed jobs left result objects"
    assert pending == 0, "deletions the store refused were never retried"
    # The pause hit the jobs: at least one could not finish while the store was away and failed.
    assert any(job["status"] == "failed" for job in jobs.values()), summary(jobs)


def test_store_paused_longer_than_the_job_timeout(stack: Stack) -> None:
    asyncio.run(_run(stack))
