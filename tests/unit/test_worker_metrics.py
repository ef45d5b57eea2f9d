"""The worker's metrics endpoint (``VEIL_WORKER__METRICS_PORT``): off when unset, on a free port with 0,
serving prometheus_client's text with the worker's instruments and the process's own."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from shared.jobs import BlurOptions, JobError, JobRecord, JobStatus
from shared.settings import WorkerSettings
from workers.metrics import REGISTRY, observe_job, serve


def test_off_unless_a_port_is_set() -> None:
    settings = WorkerSettings()
    assert settings.metrics_port is None and settings.host == "127.0.0.1"
    assert serve(settings.host, settings.metrics_port) is None


def test_observe_job_without_timings() -> None:
    """A job failed before it started (no started_at, no timings): counted, nothing observed."""
    labels = {"outcome": "failed", "code": "SOURCE_MISSING"}
    before = REGISTRY.get_sample_value("veil_jobs_total", labels) or 0.0
    waits = REGISTRY.get_sample_value("veil_job_queue_wait_seconds_count") or 0.0
    record = JobRecord(
        id="j",
        owner="o",
        options=BlurOptions(),
        status=JobStatus.FAILED,
        error=JobError(code="SOURCE_MISSING", message="gone"),
    )
    observe_job(record)
    assert REGISTRY.get_sample_value("veil_jobs_total", labels) == before + 1
    assert (REGISTRY.get_sample_value("veil_job_queue_wait_seconds_count") or 0.0) == waits
    # A clock that went backwards between gateway and worker is no negative wait.
    record.started_at = record.created_at - timedelta(seconds=5)
    sums = REGISTRY.get_sample_value("veil_job_queue_wait_seconds_sum") or 0.0
    observe_job(record)
    assert REGISTRY.get_sample_value("veil_job_queue_wait_seconds_sum") == sums


async def test_serves_on_a_free_port() -> None:
    server = serve("127.0.0.1", 0)
    assert server is not None
    try:
        assert server.port > 0

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
                return str(response.read().decode())

        text = await asyncio.to_thread(scrape)
    finally:
        await asyncio.to_thread(server.close)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["veil_jobs"].type == "counter"
    assert families["veil_job_stage_seconds"].type == "histogram"
    assert families["veil_jobs_in_flight"].type == "gauge"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
