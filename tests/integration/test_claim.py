"""Claiming jobs with one script, against real Redis: the same checks and marker as arq's transaction,
and a worker that skips its own running jobs and claims the rest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from shared.queue import open_pool
from shared.settings import Settings
from workers.claim import JobClaimer
from workers.main import VeilWorker, build_worker

pytestmark = pytest.mark.integration

IN_PROGRESS_MS = 60_000


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[ArqRedis]:
    arq = await open_pool(settings.redis)
    yield arq
    await arq.aclose()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_due_job_is_claimed_once_with_arqs_marker(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    await pool.enqueue_job("anything", _job_id="due", _queue_name=queue)
    score = await pool.zscore(queue, "due")
    claimer = JobClaimer(pool, queue, IN_PROGRESS_MS)

    assert await claimer.claim("due", _now_ms()) == int(score)
    assert await pool.get(in_progress_key_prefix + "due") == b"1"
    assert IN_PROGRESS_MS - 5_000 < await pool.pttl(in_progress_key_prefix + "due") <= IN_PROGRESS_MS
    # Held now: neither this worker nor another gets it again.
    assert await claimer.claim("due", _now_ms()) is None
    await pool.delete(in_progress_key_prefix + "due")


async def test_deferred_missing_and_running_jobs_are_not_claimed(pool: ArqRedis) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    claimer = JobClaimer(pool, queue, IN_PROGRESS_MS)
    later = f"later-{uuid.uuid4().hex}"
    await pool.enqueue_job("anything", _job_id=later, _queue_name=queue, _defer_by=60)
    assert await claimer.claim(later, _now_ms()) is None
    assert await pool.exists(in_progress_key_prefix + later) == 0
    assert await claimer.claim(f"gone-{uuid.uuid4().hex}", _now_ms()) is None

    elsewhere = f"elsewhere-{uuid.uuid4().hex}"
    await pool.enqueue_job("anything", _job_id=elsewhere, _queue_name=queue)
    await pool.psetex(in_progress_key_prefix + elsewhere, IN_PROGRESS_MS, b"1")  # another worker's
    assert await claimer.claim(elsewhere, _now_ms()) is None


async def test_worker_skips_its_own_running_jobs_and_starts_the_rest(
    pool: ArqRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = f"test:queue:{uuid.uuid4().hex}"
    mine, fresh = f"mine-{uuid.uuid4().hex}", f"fresh-{uuid.uuid4().hex}"
    for job_id in (mine, fresh):
        await pool.enqueue_job("anything", _job_id=job_id, _queue_name=queue)
    worker = build_worker(settings.model_copy(deep=True), burst=True)
    assert isinstance(worker, VeilWorker)
    worker.queue_name = queue
    worker._pool = pool
    started: list[tuple[str, int]] = []

    async def run_job(job_id: str, score: int) -> None:
        started.append((job_id, score))

    monkeypatch.setattr(worker, "run_job", run_job)
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    worker.tasks = {mine: running}  # type: ignore[dict-item]

    await worker.start_jobs([mine.encode(), fresh.encode()])
    await asyncio.sleep(0)
    await asyncio.gather(*(t for jid, t in worker.tasks.items() if jid != mine))

    assert started == [(fresh, int(await pool.zscore(queue, fresh)))]
    # Its own running job cost no claim: no in-progress key was written for it.
    assert await pool.exists(in_progress_key_prefix + mine) == 0
    assert worker.job_counter == 0  # the finished task gave its slot back
    running.cancel()
    await pool.delete(in_progress_key_prefix + fresh)
