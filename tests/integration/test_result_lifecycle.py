"""A result's life after the job: redirect while valid, 410 once expired or deleted by its owner."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobStatus, ResultInfo, utcnow
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory

pytestmark = pytest.mark.integration


async def _succeeded(
    settings: Settings, store: ObjectStore, redis: Redis, owner: str, expires_in: timedelta
) -> JobRecord:
    job_id = uuid.uuid4().hex
    key = store.result_key(job_id, "png")
    store.put(key, b"blurred bytes", "image/png")
    record = JobRecord(
        id=job_id,
        owner=owner,
        status=JobStatus.SUCCEEDED,
        finished_at=utcnow(),
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        options=BlurOptions(),
        result=ResultInfo(
            url=store.presign_get(key, 3600),
            expires_at=utcnow() + expires_in,
            content_type="image/png",
            key=key,
        ),
    )
    await JobStore(redis, settings.redis.prefix).put(record)
    return record


async def test_owner_deletes_result_early(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    api_key: tuple[str, str],
    other_auth: dict[str, str],
) -> None:
    client = await make_client(settings)
    auth = {"X-API-Key": api_key[0]}
    record = await _succeeded(settings, store, redis, api_key[1], timedelta(hours=24))
    response = await client.get(f"/v1/jobs/{record.id}/result", headers=auth, allow_redirects=False)
    assert response.status == 302

    response = await client.delete(f"/v1/jobs/{record.id}", headers=other_auth)
    assert response.status == 404
    response = await client.delete(f"/v1/jobs/{record.id}", headers=auth)
    assert response.status == 204
    assert not store.exists(record.result.key if record.result else "")

    response = await client.get(f"/v1/jobs/{record.id}/result", headers=auth, allow_redirects=False)
    body = await response.json()
    assert response.status == 410
    assert body["code"] == "RESULT_DELETED"
    job = await (await client.get(f"/v1/jobs/{record.id}", headers=auth)).json()
    assert job["result"] is None
    assert job["result_deleted_at"] is not None
    assert (await client.delete(f"/v1/jobs/{record.id}", headers=auth)).status == 204  # idempotent


async def test_expired_result_is_gone(
    make_client: ClientFactory, settings: Settings, store: ObjectStore, redis: Redis, api_key: tuple[str, str]
) -> None:
    client = await make_client(settings)
    record = await _succeeded(settings, store, redis, api_key[1], timedelta(seconds=-1))
    response = await client.get(
        f"/v1/jobs/{record.id}/result", headers={"X-API-Key": api_key[0]}, allow_redirects=False
    )
    body = await response.json()
    assert response.status == 410
    assert body["code"] == "RESULT_EXPIRED"
    # The object may still be in the store until the sweep; api4ai's inline output never hands it out.
    assert store.exists(record.result.key if record.result else "")
    job = await (
        await client.get(f"/v1/jobs/{record.id}?output=base64", headers={"X-API-Key": api_key[0]})
    ).json()
    assert "base64" not in job["result"]


async def test_a_live_result_is_inline_with_output_base64(
    make_client: ClientFactory, settings: Settings, store: ObjectStore, redis: Redis, api_key: tuple[str, str]
) -> None:
    client = await make_client(settings)
    record = await _succeeded(settings, store, redis, api_key[1], timedelta(hours=1))
    job = await (
        await client.get(f"/v1/jobs/{record.id}?output=base64", headers={"X-API-Key": api_key[0]})
    ).json()
    assert base64.b64decode(job["result"]["base64"]) == b"blurred bytes"


async def test_unfinished_job_cannot_be_deleted(
    make_client: ClientFactory, settings: Settings, redis: Redis, api_key: tuple[str, str]
) -> None:
    client = await make_client(settings)
    record = JobRecord(
        id=uuid.uuid4().hex,
        owner=api_key[1],
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        options=BlurOptions(),
    )
    await JobStore(redis, settings.redis.prefix).put(record)
    response = await client.delete(f"/v1/jobs/{record.id}", headers={"X-API-Key": api_key[0]})
    assert response.status == 409
    assert (await response.json())["code"] == "NOT_FINISHED"
