"""The worker is arq's own ``Worker``, configured through arq's documented settings only."""

from __future__ import annotations

from arq.worker import Worker

from shared.settings import load_settings
from workers.main import POLL_DELAY_SECONDS, build_worker, effective_max_jobs


def test_the_worker_is_arqs_own_with_veils_settings() -> None:
    settings = load_settings()
    worker = build_worker(settings)
    assert type(worker) is Worker  # no subclass overriding arq's internals
    assert worker.poll_delay_s == POLL_DELAY_SECONDS
    assert 0.1 <= POLL_DELAY_SECONDS <= 0.5
    max_jobs = effective_max_jobs(settings)
    assert worker.max_jobs == max_jobs
    # Running jobs stay at the queue's head: a poll must read past all of them to see queued ones.
    assert worker.queue_read_limit >= max(5 * max_jobs, 100)
    assert worker.job_timeout_s == settings.worker.job_timeout_seconds
    assert worker.queue_name == settings.redis.queue_name
