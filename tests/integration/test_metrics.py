"""``GET /metrics``: Prometheus text with request counts per route pattern, queue depth and ready workers."""

from __future__ import annotations

import pytest
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
    assert int(workers.split()[1]) >= 1
