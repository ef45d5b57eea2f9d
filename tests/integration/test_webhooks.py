"""Webhook deliveries against a real receiver on loopback and real Redis: signed, guarded, retried."""

from __future__ import annotations

import base64
import time
import uuid

import orjson
import pytest
from aiohttp import FormData
from arq import Retry
from arq.jobs import Job
from redis.asyncio import Redis
from standardwebhooks import Webhook

from shared.apikeys import ApiKeyStore
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus
from shared.jobstore import JobStore
from shared.queue import deserialize
from shared.settings import Settings
from shared.webhooks import ID_HEADER, LEGACY_SIGNATURE_HEADER, message_id, verify, verify_legacy
from tests.integration.conftest import ClientFactory
from tests.webhook_receiver import Receiver
from workers.notify import deliver

pytestmark = pytest.mark.integration


async def _finished_job(settings: Settings, redis: Redis) -> tuple[str, str]:
    _, key = await ApiKeyStore(redis, settings.redis.prefix).create("hooks")
    assert key.webhook_secret is not None
    record = JobRecord(
        id=uuid.uuid4().hex,
        owner=key.id,
        status=JobStatus.SUCCEEDED,
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        options=BlurOptions(),
    )
    await JobStore(redis, settings.redis.prefix).put(record)
    return record.id, key.webhook_secret


def _allowing_loopback(settings: Settings) -> Settings:
    return settings.model_copy(update={"url_allowlist": ["127.0.0.1"]})


async def test_delivery_is_signed_and_carries_the_job(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, secret = await _finished_job(settings, redis)
    outcome = await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=1)
    assert outcome == "delivered (200)"
    body, headers = receiver.received[0]
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)  # any Standard Webhooks receiver
    assert verify(secret, headers, body)
    assert headers[ID_HEADER] == message_id(job_id, "job.succeeded")
    # Deprecated, still sent for one release.
    assert verify_legacy(secret, headers[LEGACY_SIGNATURE_HEADER], body, now=int(time.time()))
    payload = orjson.loads(body)
    assert payload["event"] == "job.succeeded"
    assert payload["job"]["id"] == job_id
    assert "owner" not in payload["job"]
    assert headers["Veil-Event"] == "job.succeeded"


async def test_retries_keep_the_message_id_and_sign_again(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, secret = await _finished_job(settings, redis)
    receiver.status = 503
    with pytest.raises(Retry):
        await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=1)
    receiver.status = 200
    assert await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=2) == (
        "delivered (200)"
    )
    assert len(receiver.received) == 2
    assert {headers[ID_HEADER] for _, headers in receiver.received} == {message_id(job_id, "job.succeeded")}
    for body, headers in receiver.received:
        Webhook(secret).verify(body, headers)


async def test_loopback_receiver_refused_without_allowlist(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, _ = await _finished_job(settings, redis)
    outcome = await deliver(settings.model_copy(update={"url_allowlist": []}), redis, job_id, receiver.url, 1)
    assert outcome.startswith("refused")
    assert receiver.received == []


async def test_server_errors_are_retried_client_errors_are_not(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, _ = await _finished_job(settings, redis)
    receiver.status = 503
    with pytest.raises(Retry):
        await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=1)
    outcome = await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=5)
    assert outcome.startswith("gave up after 5 attempts")
    receiver.status = 410
    assert await deliver(_allowing_loopback(settings), redis, job_id, receiver.url, attempt=1) == (
        "receiver answered 410"
    )


async def test_native_callback_url_is_checked_and_queued(
    make_client: ClientFactory, settings: Settings, redis: Redis, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(settings)
    for url, words in (("ftp://example.com/x", "http"), ("http://169.254.169.254/latest", "link-local")):
        form = FormData()
        form.add_field("image", astronaut_jpeg, filename="a.jpg")
        form.add_field("callback_url", url)
        response = await client.post("/v1/jobs", data=form, headers=auth)
        body = await response.json()
        assert response.status == 400, body
        assert words in body["message"]
    response = await client.post(
        "/v1/jobs",
        json={
            "image_base64": base64.b64encode(astronaut_jpeg).decode(),
            "callback_url": "https://example.com/h",
        },
        headers=auth,
    )
    created = await response.json()
    assert response.status == 202, created
    info = await Job(
        created["id"], redis, _queue_name=settings.redis.queue_name, _deserializer=deserialize
    ).info()
    assert info is not None
    request = JobRequest.model_validate(info.args[0])
    assert request.callback_url == "https://example.com/h"
