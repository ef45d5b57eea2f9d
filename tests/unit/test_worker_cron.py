"""The worker's cron jobs: the sweeper runs every ``sweep_interval_seconds``, once per tick across workers."""

from __future__ import annotations

from shared.settings import load_settings
from workers.main import build_worker


def test_the_sweeper_runs_every_interval() -> None:
    settings = load_settings()
    settings = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"sweep_interval_seconds": 15})}
    )
    worker = build_worker(settings)
    crons = {job.name: job for job in worker.cron_jobs}
    sweeper = crons["cron:sweep_jobs"]
    assert sweeper.second == {0, 15, 30, 45}
    assert sweeper.unique
    assert "cron:sweep_expired" in crons
