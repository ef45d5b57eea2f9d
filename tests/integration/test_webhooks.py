"""Webhook deliveries against a real receiver on loopback and real Redis: signed, guarded, retried on any
answer but a 2xx until the window closes or the receiver says 410 Gone, every attempt recorded."""

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
from shared.deliveries import DeliveryAttempt, DeliveryOutcome, DeliveryStore
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus
from shared.jobstore import JobStore
from shared.queue import deserialize
from shared.settings import Settings
from shared.webhooks import ID_HEADER, LEGACY_SIGNATURE_HEADER, message_id, verify, verify_legacy
from tests.integration.conftest import ClientFactory
from tests.webhook_receiver import Receiver
from workers.notify import Delivery, deliver

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


def _delivery(job_id: str, url: str, *, queued_at: float | None = None) -> Delivery:
    return Delivery(kind="job", subject_id=job_id, callback_url=url, queued_at=queued_at or time.time())


async def _attempts(settings: Settings, redis: Redis, job_id: str) -> list[DeliveryAttempt]:
    return await DeliveryStore(redis, settings.redis.prefix).attempts("job", job_id)


async def test_delivery_is_signed_and_carries_the_job(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, secret = await _finished_job(settings, redis)
    attempt = await deliver(_allowing_loopback(settings), redis, _delivery(job_id, receiver.url), attempt=1)
    assert attempt is not None
    assert (attempt.outcome, attempt.status, attempt.error) == (DeliveryOutcome.DELIVERED, 200, None)
    assert attempt.latency_ms is not None and attempt.latency_ms >= 0
    assert await _attempts(settings, redis, job_id) == [attempt]
    body, headers = receiver.received[0]
    assert Webhook(secret).verify(body, headers) == orjson.loads(body)  # any Standard Webhooks receiver
    assert verify(secret, headers, body)
    assert headers[ID_HEADER] == message_id(job_id, "job.succeeded") == attempt.webhook_id
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
    delivery = _delivery(job_id, receiver.url)
    receiver.status = 503
    with pytest.raises(Retry):
        await deliver(_allowing_loopback(settings), redis, delivery, attempt=1)
    receiver.status = 200
    attempt = await deliver(_allowing_loopback(settings), redis, delivery, attempt=2)
    assert attempt is not None and attempt.outcome is DeliveryOutcome.DELIVERED
    assert len(receiver.received) == 2
    assert {headers[ID_HEADER] for _, headers in receiver.received} == {message_id(job_id, "job.succeeded")}
    for body, headers in receiver.received:
        Webhook(secret).verify(body, headers)
    first, second = await _attempts(settings, redis, job_id)
    assert (first.attempt, first.outcome, first.status) == (1, DeliveryOutcome.RETRYING, 503)
    assert (
        first.error == "HTTP 503" and first.next_attempt_at is not None and first.next_attempt_at > first.at
    )
    assert (second.attempt, second.outcome) == (2, DeliveryOutcome.DELIVERED)


async def test_loopback_receiver_refused_without_allowlist(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, _ = await _finished_job(settings, redis)
    closed = settings.model_copy(update={"url_allowlist": []})
    attempt = await deliver(closed, redis, _delivery(job_id, receiver.url), 1)  # final: no Retry
    assert attempt is not None and attempt.outcome is DeliveryOutcome.FAILED
    assert attempt.error is not None and attempt.error.startswith("refused by the SSRF guard")
    assert attempt.status is None
    assert receiver.received == []


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503, 302])
async def test_every_answer_but_2xx_is_retried(
    settings: Settings, redis: Redis, receiver: Receiver, status: int
) -> None:
    job_id, _ = await _finished_job(settings, redis)
    receiver.status = status
    with pytest.raises(Retry):
        await deliver(_allowing_loopback(settings), redis, _delivery(job_id, receiver.url), attempt=1)
    (attempt,) = await _attempts(settings, redis, job_id)
    assert (attempt.status, attempt.outcome, attempt.error) == (
        status,
        DeliveryOutcome.RETRYING,
        f"HTTP {status}",
    )


async def test_gone_stops_the_retries(settings: Settings, redis: Redis, receiver: Receiver) -> None:
    job_id, _ = await _finished_job(settings, redis)
    receiver.status = 410
    attempt = await deliver(_allowing_loopback(settings), redis, _delivery(job_id, receiver.url), 1)
    assert attempt is not None
    assert (attempt.status, attempt.outcome, attempt.next_attempt_at) == (410, DeliveryOutcome.FAILED, None)


async def test_retries_end_with_the_window(settings: Settings, redis: Redis, receiver: Receiver) -> None:
    job_id, _ = await _finished_job(settings, redis)
    receiver.status = 503
    window = settings.webhooks.retry_for_seconds
    late = _delivery(job_id, receiver.url, queued_at=time.time() - window + 1)  # the next wait is longer
    attempt = await deliver(_allowing_loopback(settings), redis, late, attempt=3)
    assert attempt is not None and (attempt.outcome, attempt.attempt) == (DeliveryOutcome.GAVE_UP, 3)
    assert attempt.error == "HTTP 503"


async def test_nothing_is_sent_for_a_revoked_key_or_an_expired_record(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    job_id, _ = await _finished_job(settings, redis)
    record = await JobStore(redis, settings.redis.prefix).get(job_id)
    assert record is not None
    await ApiKeyStore(redis, settings.redis.prefix).revoke(record.owner)
    revoked = await deliver(_allowing_loopback(settings), redis, _delivery(job_id, receiver.url), 1)
    assert revoked is not None and revoked.outcome is DeliveryOutcome.FAILED
    assert revoked.error == "the API key was revoked or has no webhook secret"
    gone = await deliver(_allowing_loopback(settings), redis, _delivery(uuid.uuid4().hex, receiver.url), 1)
    assert gone is not None and (gone.outcome, gone.error) == (
        DeliveryOutcome.FAILED,
        "the job's record has expired",
    )
    assert receiver.received == []


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
