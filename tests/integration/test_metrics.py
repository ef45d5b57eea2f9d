"""``GET /metrics``: Prometheus text with request counts and latency per route pattern, queue depth and ready
workers."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from shared.readiness import WorkerInfo, announce, withdraw
from shared.settings import Settings
from tests.integration.conftest import ClientFactory

pytestmark = pytest.mark.integration


async def test_metrics_count_requests_by_route_and_report_workers(
    make_client: ClientFactory, settings: Settings, redis: Redis, auth: dict[str, str]
) -> None:
    client = await make_client(settings)
    await client.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=auth)  # 404
    await client.get("/v1/jobs/fedcba9876543210fedcba9876543210", headers=auth)  # 404, same route
    await client.get("/healthz")
    info = WorkerInfo(
        id="metrics-test", providers=["CPUExecutionProvider"], models=[], started_at="", host="h"
    )
    await announce(redis, settings.redis.prefix, info.model_copy(update={"rss_bytes": 123456}))
    try:
        response = await client.get("/metrics")
        text = await response.text()
    finally:
        await withdraw(redis, settings.redis.prefix, info.id)
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert 'veil_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 2' in text
    assert 'veil_http_requests_total{method="GET",route="/healthz",status="200"} 1' in text
    assert "veil_queue_depth " in text
    assert 'veil_worker_rss_bytes{worker="metrics-test"} 123456' in text
    workers = next(line for line in text.splitlines() if line.startswith("veil_workers_ready "))
    assert float(workers.split()[1]) >= 1  # prometheus_client writes every value as a float: "1.0"


async def test_metrics_parse_and_hold_the_request_just_made(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str]
) -> None:
    client = await make_client(settings)
    # A fresh app has a registry of its own: what it reports is this test's requests alone.
    assert (await client.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=auth)).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    families = {family.name: family for family in text_string_to_metric_families(await response.text())}

    route = {"method": "GET", "route": "/v1/jobs/{job_id}"}
    requests = {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in families["veil_http_requests"].samples
        if sample.name == "veil_http_requests_total"
    }
    assert requests == {tuple(sorted({**route, "status": "404"}.items())): 1.0}  # /metrics counts after
    latency = {sample.name: sample for sample in families["veil_http_request_duration_seconds"].samples}
    assert families["veil_http_request_duration_seconds"].type == "histogram"
    assert latency["veil_http_request_duration_seconds_count"].labels == route
    assert latency["veil_http_request_duration_seconds_count"].value == 1.0
    inf = [s for s in families["veil_http_request_duration_seconds"].samples if s.labels.get("le") == "+Inf"]
    assert [s.value for s in inf] == [1.0]
    for gauge in ("veil_queue_depth", "veil_workers_ready", "veil_gateway_uptime_seconds"):
        assert families[gauge].type == "gauge"
    assert families["process_resident_memory_bytes"].samples[0].value > 0
