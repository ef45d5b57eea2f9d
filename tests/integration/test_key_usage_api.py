"""``GET /v1/usage`` against the real gateway and Redis: the key's own days with real counts (jobs submitted
through the gateway, ended by the worker's own JobStore.finish), every key's for admins, another key's
refused to others, and every bad query a 400 that says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore, Scope
from shared.jobs import Detection, JobError, JobStatus, utcnow
from shared.jobstore import JobStore
from shared.settings import Settings
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration


async def _key(settings: Settings, *scopes: Scope) -> tuple[str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        token, key = await ApiKeyStore(redis, settings.redis.prefix).create("usage", scopes=scopes)
    finally:
        await redis.aclose()
    return token, key.id


async def _submit(client: GatewayClient, token: str, image: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("image", image, filename="a.jpg", content_type="image/jpeg")
    response = await client.post("/v1/jobs", data=form, headers={"X-API-Key": token})
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def _end(redis: Redis, settings: Settings, job_id: str, *, succeeded: bool) -> None:
    jobs = JobStore(redis, settings.redis.prefix)
    record = await jobs.get(job_id)
    assert record is not None
    face = Detection.model_validate({"class": "face", "score": 0.9, "box": [1, 2, 3, 4]})
    changes: dict[str, Any] = {"finished_at": utcnow()}
    if succeeded:
        changes |= {"status": JobStatus.SUCCEEDED, "detections": [face, face]}
    else:
        changes |= {"status": JobStatus.FAILED, "error": JobError(code="DETECTION_FAILED", message="x")}
    await jobs.finish(record.model_copy(update=changes), count_success=succeeded)


async def _usage(client: GatewayClient, token: str, query: str = "") -> tuple[int, dict[str, Any]]:
    response = await client.get(f"/v1/usage{query}", headers={"X-API-Key": token})
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_a_key_sees_its_own_real_usage(
    client: GatewayClient, redis: Redis, settings: Settings, astronaut_jpeg: bytes
) -> None:
    token, key_id = await _key(settings, Scope.SUBMIT, Scope.READ)
    ok, bad = await _submit(client, token, astronaut_jpeg), await _submit(client, token, astronaut_jpeg)
    await _end(redis, settings, ok, succeeded=True)
    await _end(redis, settings, bad, succeeded=False)
    await _end(redis, settings, ok, succeeded=True)  # a repeated end never counts twice

    status, body = await _usage(client, token)
    assert status == 200
    today = datetime.now(UTC).date()
    assert (body["from"], body["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())
    [day] = body["days"]
    assert day["key_id"] == key_id
    assert day["day"] == today.isoformat()
    assert (day["submitted"], day["succeeded"], day["failed"]) == (2, 1, 1)
    assert day["detections"] == {"face": 2}
    assert day["megapixels"] == pytest.approx(0.262, abs=0.001)  # 512 x 512
    assert day["credits"] == 1
    assert body["totals"] == {
        "submitted": 2,
        "succeeded": 1,
        "failed": 1,
        "detections": {"face": 2},
        "megapixels": day["megapixels"],
        "credits": 1,
    }
    # Its own id may be named; a range without that day is empty.
    assert (await _usage(client, token, f"?key_id={key_id}"))[0] == 200
    yesterday = (today - timedelta(days=1)).isoformat()
    status, body = await _usage(
        client, token, f"?from={(today - timedelta(days=10)).isoformat()}&to={yesterday}"
    )
    assert (status, body["days"], body["totals"]["submitted"]) == (200, [], 0)


async def test_admins_see_every_key_and_others_only_their_own(
    client: GatewayClient, settings: Settings, astronaut_jpeg: bytes
) -> None:
    first, first_id = await _key(settings, Scope.SUBMIT, Scope.READ)
    second, second_id = await _key(settings, Scope.SUBMIT, Scope.READ)
    admin, _ = await _key(settings, Scope.ADMIN)
    await _submit(client, first, astronaut_jpeg)
    await _submit(client, second, astronaut_jpeg)

    status, body = await _usage(client, admin)
    assert status == 200
    seen = {day["key_id"] for day in body["days"]}
    assert {first_id, second_id} <= seen
    status, body = await _usage(client, admin, f"?key_id={second_id}")
    assert [(day["key_id"], day["submitted"]) for day in body["days"]] == [(second_id, 1)]

    status, body = await _usage(client, first, f"?key_id={second_id}")
    assert status == 403
    assert body == {"code": "FORBIDDEN", "message": "only an admin key may read another key's usage"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?from=2026-13-01", "from is not a real date: '2026-13-01'"),
        ("?to=20260101", "to must be a date as YYYY-MM-DD, not '20260101'"),
        ("?from=yesterday", "from must be a date as YYYY-MM-DD, not 'yesterday'"),
        ("?from=2026-02-02&to=2026-02-01", "from (2026-02-02) is after to (2026-02-01)"),
        ("?from=2025-01-01&to=2026-01-02", "the range spans 367 days; at most 366"),
        ("?since=2026-01-01", "unknown query parameter 'since': use from, to, key_id"),
        ("?from=2026-01-01&from=2026-01-02", "from is given more than once"),
    ],
)
async def test_bad_queries_are_400s_that_say_why(
    client: GatewayClient, auth: dict[str, str], query: str, message: str
) -> None:
    response = await client.get(f"/v1/usage{query}", headers=auth)
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["message"].startswith(message)


async def test_a_full_year_is_allowed(client: GatewayClient, auth: dict[str, str]) -> None:
    response = await client.get("/v1/usage?from=2024-01-01&to=2024-12-31", headers=auth)  # 366 days
    assert response.status == 200
    assert (await response.json())["days"] == []
