"""Privacy requests against the real gateway, Redis and SeaweedFS: a key's export holds its record (no
secret), quota, usage, jobs and deliveries; erasure then leaves no Redis key naming the key or its jobs, no
object of them in the store, and one audit line with counts only. Jobs still queued stop an erasure (the key
is revoked by then); the worker's side of a job is played by its own calls (JobStore.finish)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore, Scope
from shared.bulk import BulkRecord, BulkSource, BulkStore
from shared.deliveries import DeliveryAttempt, DeliveryOutcome, DeliveryStore
from shared.jobs import Detection, JobStatus, ResultInfo, utcnow
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(settings: Settings) -> dict[str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        token, _ = await ApiKeyStore(redis, settings.redis.prefix).create("admin", scopes=[Scope.ADMIN])
    finally:
        await redis.aclose()
    return {"X-API-Key": token}


async def _submit(client: GatewayClient, token: str, image: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("image", image, filename="a.jpg", content_type="image/jpeg")
    response = await client.post("/v1/jobs", data=form, headers={"X-API-Key": token})
    assert response.status == 202, await response.text()
    job_id: str = (await response.json())["id"]
    return job_id


async def _succeed(redis: Redis, settings: Settings, store: ObjectStore, job_id: str) -> None:
    """What a worker does when a job succeeds, but the original is left in the store (as when its deletion
    is still pending): the erasure must find it."""
    jobs = JobStore(redis, settings.redis.prefix)
    record = await jobs.get(job_id)
    assert record is not None
    key = store.result_key(job_id, "jpg")
    store.put(key, b"blurred", "image/jpeg")
    done = record.model_copy(
        update={
            "status": JobStatus.SUCCEEDED,
            "finished_at": utcnow(),
            "detections": [Detection.model_validate({"class": "face", "score": 0.9, "box": [1, 2, 3, 4]})],
            "result": ResultInfo(
                url="https://store/r",
                expires_at=utcnow() + timedelta(days=1),
                content_type="image/jpeg",
                key=key,
            ),
        }
    )
    assert await jobs.finish(done, count_success=True) is None
    attempt = DeliveryAttempt(
        redelivery=0,
        attempt=1,
        at=utcnow(),
        event="job.succeeded",
        webhook_id=f"msg_{job_id}",
        url="https://hooks.example/veil",
        status=200,
        latency_ms=12.0,
        error=None,
        outcome=DeliveryOutcome.DELIVERED,
    )
    await DeliveryStore(redis, settings.redis.prefix).add("job", job_id, attempt)


async def _redis_names(redis: Redis, settings: Settings, ids: set[str]) -> list[str]:
    found = []
    async for raw in redis.scan_iter(match=f"{settings.redis.prefix}:*", count=1000):
        name = raw.decode()
        if any(part in ids for part in name.split(":")) or any(item in name for item in ids):
            found.append(name)
    return found


async def test_export_then_erase_leaves_nothing_behind(
    client: GatewayClient,
    admin: dict[str, str],
    redis: Redis,
    settings: Settings,
    store: ObjectStore,
    astronaut_jpeg: bytes,
) -> None:
    created = await (
        await client.post("/v1/admin/keys", json={"name": "claims team", "credits": 10}, headers=admin)
    ).json()
    key_id, token = created["id"], created["key"]
    job_ids = [await _submit(client, token, astronaut_jpeg) for _ in range(2)]
    for job_id in job_ids:
        await _succeed(redis, settings, store, job_id)
        assert store.exists(store.upload_key(job_id))  # the original, still there
        assert store.exists(store.result_key(job_id, "jpg"))

    export = await client.get(f"/v1/admin/keys/{key_id}/export", headers=admin)
    assert export.status == 200
    assert key_id in export.headers["Content-Disposition"]
    document: dict[str, Any] = await export.json()
    assert document["key"]["name"] == "claims team"
    assert "webhook_secret" not in document["key"]
    assert created["webhook_secret"] not in orjson.dumps(document).decode()
    assert token not in orjson.dumps(document).decode()
    assert document["quota"]["credits_left"] == 8
    assert sorted(job["id"] for job in document["jobs"]) == sorted(job_ids)
    assert all("owner" not in job for job in document["jobs"])
    assert set(document["deliveries"]["jobs"]) == set(job_ids)
    [today] = document["usage"]
    assert (today["submitted"], today["succeeded"], today["detections"]) == (2, 2, {"face": 2})

    erased = await client.post(f"/v1/admin/keys/{key_id}/erase", headers=admin)
    assert erased.status == 200, await erased.text()
    counts = await erased.json()
    assert counts["key_id"] == key_id
    assert counts["key_revoked"] is True
    assert (counts["jobs"], counts["deliveries"]) == (2, 2)
    assert counts["objects"] == 4  # two originals, two results
    assert counts["redis_keys"] > 0

    assert await _redis_names(redis, settings, {key_id, *job_ids}) == []
    for job_id in job_ids:
        assert not store.exists(store.upload_key(job_id))
        assert not store.exists(store.result_key(job_id, "jpg"))
    assert (await client.get("/v1/usage", headers={"X-API-Key": token})).status == 401
    # One audit line: the key id, the time and counts; nothing personal (no name, no URL).
    raw_line = await redis.lindex(f"{settings.redis.prefix}:audit", 0)  # type: ignore[misc]
    line = orjson.loads(raw_line)
    assert line["event"] == "key.erased"
    assert line["key_id"] == key_id
    assert line["objects"] == 4
    assert "claims team" not in raw_line.decode() and "hooks.example" not in raw_line.decode()
    # Nothing is held any more: both requests are 404s now.
    assert (await client.get(f"/v1/admin/keys/{key_id}/export", headers=admin)).status == 404
    assert (await client.post(f"/v1/admin/keys/{key_id}/erase", headers=admin)).status == 404


async def test_erasure_waits_for_queued_jobs_and_revokes_the_key_first(
    client: GatewayClient, admin: dict[str, str], redis: Redis, settings: Settings, astronaut_jpeg: bytes
) -> None:
    created = await (await client.post("/v1/admin/keys", json={"name": "busy"}, headers=admin)).json()
    job_id = await _submit(client, created["key"], astronaut_jpeg)
    refused = await client.post(f"/v1/admin/keys/{created['id']}/erase", headers=admin)
    assert refused.status == 409
    body = await refused.json()
    assert body["code"] == "JOBS_IN_FLIGHT"
    assert "1 of its jobs are still queued or running" in body["message"]
    assert (await client.get("/v1/usage", headers={"X-API-Key": created["key"]})).status == 401
    assert await JobStore(redis, settings.redis.prefix).get(job_id) is not None  # nothing erased yet
    # A revoked key's data can still be exported.
    export = await client.get(f"/v1/admin/keys/{created['id']}/export", headers=admin)
    assert export.status == 200
    document = await export.json()
    assert document["key"] is None
    assert [job["id"] for job in document["jobs"]] == [job_id]


async def test_a_keys_bulk_jobs_are_exported_and_erased_and_others_are_left(
    client: GatewayClient, admin: dict[str, str], redis: Redis, settings: Settings, unique: str
) -> None:
    created = await (await client.post("/v1/admin/keys", json={"name": "bulk"}, headers=admin)).json()
    bulks = BulkStore(redis, settings.redis.prefix)
    mine = BulkRecord(id=f"b{unique}", owner=created["id"], source=BulkSource(bucket="veil-user-bucket"))
    theirs = BulkRecord(id=f"o{unique}", owner="someone-else", source=BulkSource(bucket="veil-user-bucket"))
    for record in (mine, theirs):
        await bulks.put(record)
        await bulks.progress.cancel(record.id)  # one of a bulk job's parts
    document = await (await client.get(f"/v1/admin/keys/{created['id']}/export", headers=admin)).json()
    assert [bulk["id"] for bulk in document["bulk_jobs"]] == [mine.id]
    assert "owner" not in document["bulk_jobs"][0]

    counts = await (await client.post(f"/v1/admin/keys/{created['id']}/erase", headers=admin)).json()
    assert counts["bulk_jobs"] == 1
    assert await _redis_names(redis, settings, {mine.id}) == []
    assert await bulks.get(theirs.id) is not None
    assert await bulks.progress.is_cancelled(theirs.id)
