"""The worker skips its own running jobs when arq hands it the head of the queue."""

from __future__ import annotations

import asyncio

import pytest
from arq.worker import Worker

from shared.settings import load_settings
from workers.main import VeilWorker, build_worker


async def test_start_jobs_skips_jobs_this_worker_is_running(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[bytes]] = []

    async def record(self: Worker, job_ids: list[bytes]) -> None:
        seen.append(list(job_ids))

    monkeypatch.setattr(Worker, "start_jobs", record)
    worker = build_worker(load_settings(), burst=True)
    assert isinstance(worker, VeilWorker)
    loop = asyncio.get_running_loop()
    running: asyncio.Future[None] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    finished.set_result(None)
    worker.tasks = {"running": running, "finished": finished}  # type: ignore[dict-item]

    await worker.start_jobs([b"running", b"finished", b"new"])

    # A finished task not yet cleaned up and an unknown id still get arq's own check.
    assert seen == [[b"finished", b"new"]]
    running.cancel()
