"""Webhook deliveries end to end but for the models: a real arq worker runs ``deliver_webhook`` (with short
retry waits) against a receiver on loopback that answers what each test scripts, every attempt is recorded
and listed at ``GET /v1/jobs/<id>/deliveries``, and ``POST`` sends the event again. Real Redis and
SeaweedFS."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from arq.worker import Worker, func
from redis.asyncio import Redis
from standardwebhooks import Webhook

from shared.apikeys import ApiKeyStore
from shared.bulk import BulkRecord, BulkSource, BulkStatus, BulkStore
from shared.deliveries import (
    DELIVER_FUNCTION,
    ERROR_CHARS,
    DeliveryOutcome,
    DeliveryStore,
    enqueue_delivery,
    retry_delay,
)
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobStatus
from shared.jobstore import JobStore
from shared.queue import arq_redis_settings, deserialize, open_pool, serialize
from shared.settings import Settings, WebhookSettings
from shared.storage import ObjectStore
from shared.webhooks import ID_HEADER, message_id
from tests.fakes import worker_state
from tests.integration.conftest import ClientFactory
from tests.integration.test_gateway_jobs import with_changes
from workers.context import CTX_KEY
from workers.notify import MAX_ATTEMPTS, Delivery, deliver, deliver_webhook

pytestmark = pytest.mark.integration


@dataclass
class ScriptedReceiver:
    """Answers each POST with the next of ``statuses`` (the last one again once they run out)."""

    statuses: list[int]
    body: str = ""
    url: str = ""
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedReceiver]:
    state = ScriptedReceiver(statuses=[200])

    async def hook(request: web.Request) -> web.Response:
        state.received.append((await request.read(), dict(request.headers)))
        status = state.statuses[min(len(state.received), len(state.statuses)) - 1]
        return web.Response(status=status, text=state.body)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("/hook"))
    yield state
    await server.close()


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """Loopback receivers allowed, retries within a fraction of a second, a queue of this test's own."""
    return with_changes(
        settings,
        url_allowlist=["127.0.0.1"],  # type: ignore[arg-type]
        redis={"queue_name": f"veil:test-deliveries:{uuid.uuid4().hex[:8]}"},
        webhooks={"retry_first_delay_seconds": 0.05, "retry_max_delay_seconds": 0.2},
    )


@pytest.fixture
async def pool(quick: Settings) -> AsyncIterator[ArqRedis]:
    arq = await open_pool(quick.redis)
    yield arq
    await arq.aclose()


async def _finished_job(settings: Settings, redis: Redis, owner: str, status: JobStatus) -> str:
    record = JobRecord(
        id=uuid.uuid4().hex,
        owner=owner,
        status=status,
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        options=BlurOptions(),
    )
    await JobStore(redis, settings.redis.prefix).put(record)
    return record.id


async def _run_deliveries(settings: Settings, redis: Redis, store: ObjectStore) -> None:
    """A real arq worker running deliveries as ``build_worker`` registers them, until none is left (retries
    waiting for their turn included)."""
    state = worker_state(settings, redis, store, name="deliveries")

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[CTX_KEY] = state

    worker = Worker(
        functions=[func(deliver_webhook, name=DELIVER_FUNCTION, timeout=30, max_tries=MAX_ATTEMPTS)],
        queue_name=settings.redis.queue_name,
        redis_settings=arq_redis_settings(settings.redis),
        on_startup=startup,
        burst=True,
        poll_delay=0.02,
        handle_signals=False,
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    try:
        await asyncio.wait_for(worker.async_run(), 60)
    finally:
        await worker.close()


async def _secret(settings: Settings, redis: Redis, key_id: str) -> str:
    key = await ApiKeyStore(redis, settings.redis.prefix).get(key_id)
    assert key is not None and key.webhook_secret
    return key.webhook_secret


async def test_a_receiver_failing_twice_gets_one_delivery_after_retries_and_a_redelivery(
    make_client: ClientFactory,
    quick: Settings,
    redis: Redis,
    store: ObjectStore,
    pool: ArqRedis,
    api_key: tuple[str, str],
    scripted: ScriptedReceiver,
) -> None:
    client = await make_client(quick)
    headers = {"X-API-Key": api_key[0]}
    job_id = await _finished_job(quick, redis, api_key[1], JobStatus.SUCCEEDED)
    scripted.statuses = [503, 500, 200]
    await enqueue_delivery(pool, job_id, scripted.url, quick.redis.queue_name)
    await _run_deliveries(quick, redis, store)

    secret = await _secret(quick, redis, api_key[1])
    assert len(scripted.received) == 3
    for body, sent in scripted.received:  # one message, signed for each attempt
        assert Webhook(secret).verify(body, sent)["job"]["id"] == job_id
        assert sent[ID_HEADER] == message_id(job_id, "job.succeeded")
    response = await client.get(f"/v1/jobs/{job_id}/deliveries", headers=headers)
    listed = await response.json()
    assert response.status == 200, listed
    assert listed["links"] == {"self": f"/v1/jobs/{job_id}/deliveries"}
    attempts = listed["deliveries"]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
        (1, 503, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "delivered"),
    ]
    assert [a["outcome"] for a in attempts].count("delivered") == 1
    assert {a["url"] for a in attempts} == {scripted.url}
    assert all(
        a["redelivery"] == 0 and a["webhook_id"] == message_id(job_id, "job.succeeded") for a in attempts
    )
    assert attempts[0]["next_attempt_at"] and attempts[2]["next_attempt_at"] is None

    # Sent again on request: the same webhook-id (receivers deduplicate), signed anew.
    response = await client.post(f"/v1/jobs/{job_id}/deliveries", headers=headers)
    accepted = await response.json()
    assert response.status == 202, accepted
    assert accepted == {
        "redelivery": 1,
        "status": "queued",
        "links": {"deliveries": f"/v1/jobs/{job_id}/deliveries"},
    }
    assert response.headers["Location"] == f"/v1/jobs/{job_id}/deliveries"
    await _run_deliveries(quick, redis, store)
    body, sent = scripted.received[-1]
    assert len(scripted.received) == 4
    assert Webhook(secret).verify(body, sent)
    assert sent[ID_HEADER] == message_id(job_id, "job.succeeded")
    last = (await (await client.get(f"/v1/jobs/{job_id}/deliveries", headers=headers)).json())["deliveries"][
        -1
    ]
    assert (last["redelivery"], last["attempt"], last["outcome"]) == (1, 1, "delivered")


async def test_gone_stops_retries_at_once(
    quick: Settings,
    redis: Redis,
    store: ObjectStore,
    pool: ArqRedis,
    api_key: tuple[str, str],
    scripted: ScriptedReceiver,
) -> None:
    job_id = await _finished_job(quick, redis, api_key[1], JobStatus.FAILED)
    scripted.statuses = [410, 200]
    await enqueue_delivery(pool, job_id, scripted.url, quick.redis.queue_name)
    await _run_deliveries(quick, redis, store)
    assert len(scripted.received) == 1
    assert orjson.loads(scripted.received[0][0])["event"] == "job.failed"
    (attempt,) = await DeliveryStore(redis, quick.redis.prefix).attempts("job", job_id)
    assert (attempt.status, attempt.outcome) == (410, DeliveryOutcome.FAILED)


async def test_a_redelivery_replaces_a_delivery_still_retrying(
    make_client: ClientFactory,
    quick: Settings,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    scripted: ScriptedReceiver,
) -> None:
    client = await make_client(quick)
    job_id = await _finished_job(quick, redis, api_key[1], JobStatus.SUCCEEDED)
    scripted.statuses = [503, 200]
    first = Delivery(kind="job", subject_id=job_id, callback_url=scripted.url, queued_at=time.time())
    with pytest.raises(Retry):
        await deliver(quick, redis, first, 1)
    response = await client.post(f"/v1/jobs/{job_id}/deliveries", headers={"X-API-Key": api_key[0]})
    assert response.status == 202
    queued = Job(f"webhook:{job_id}:r1", pool, _queue_name=quick.redis.queue_name)
    assert await queued.status() is ArqStatus.queued
    assert await deliver(quick, redis, first, 2) is None  # the earlier one stops, sending nothing
    assert len(scripted.received) == 1
    again = Delivery(**{**first.__dict__, "redelivery": 1})
    attempt = await deliver(quick, redis, again, 1)
    assert attempt is not None and attempt.outcome is DeliveryOutcome.DELIVERED


async def test_errors_are_short_and_never_more_of_the_answer(
    quick: Settings, redis: Redis, api_key: tuple[str, str], scripted: ScriptedReceiver
) -> None:
    job_id = await _finished_job(quick, redis, api_key[1], JobStatus.SUCCEEDED)
    scripted.statuses, scripted.body = [500], "stack trace\n" + "x" * 5000
    delivery = Delivery(kind="job", subject_id=job_id, callback_url=scripted.url, queued_at=time.time())
    with pytest.raises(Retry):
        await deliver(quick, redis, delivery, 1)
    (attempt,) = await DeliveryStore(redis, quick.redis.prefix).attempts("job", job_id)
    assert attempt.error is not None and attempt.error.startswith("HTTP 500: stack trace x")
    assert len(attempt.error) <= ERROR_CHARS
    unreachable = Delivery(**{**delivery.__dict__, "callback_url": "http://127.0.0.1:9/hook"})
    with pytest.raises(Retry):
        await deliver(quick, redis, unreachable, 1)
    latest = (await DeliveryStore(redis, quick.redis.prefix).attempts("job", job_id))[-1]
    assert latest.status is None and latest.error and "Connect" in latest.error


async def test_deliveries_endpoints_refuse_what_they_must(
    make_client: ClientFactory,
    quick: Settings,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    other_auth: dict[str, str],
) -> None:
    client = await make_client(quick)
    headers = {"X-API-Key": api_key[0]}
    queued = await _finished_job(quick, redis, api_key[1], JobStatus.QUEUED)
    silent = await _finished_job(quick, redis, api_key[1], JobStatus.SUCCEEDED)  # no callback_url
    bulks = BulkStore(redis, quick.redis.prefix)
    source = BulkSource(bucket="veil-user-bucket")
    running = BulkRecord(id=uuid.uuid4().hex, owner=api_key[1], status=BulkStatus.LISTING, source=source)
    finished = BulkRecord(id=uuid.uuid4().hex, owner=api_key[1], status=BulkStatus.RUNNING, source=source)
    hooked = finished.model_copy(update={"id": uuid.uuid4().hex, "callback_url": "https://hooks.example/x"})
    for record in (running, finished, hooked):
        await bulks.put(record)
    for record in (finished, hooked):
        assert await bulks.progress.claim_finished(record.id)
    cases = [
        ("get", f"/v1/jobs/{queued}/deliveries", other_auth, 404, "NOT_FOUND"),
        ("post", f"/v1/jobs/{queued}/deliveries", other_auth, 404, "NOT_FOUND"),
        ("get", f"/v1/jobs/{'0' * 32}/deliveries", headers, 404, "NOT_FOUND"),
        ("get", f"/v1/jobs/{queued}/deliveries", {}, 401, "UNAUTHORIZED"),
        ("post", f"/v1/jobs/{queued}/deliveries", {}, 401, "UNAUTHORIZED"),
        ("post", f"/v1/jobs/{queued}/deliveries", headers, 409, "NOT_FINISHED"),
        ("post", f"/v1/jobs/{silent}/deliveries", headers, 409, "NO_DELIVERY"),
        ("get", "/v1/bulk/unknown/deliveries", headers, 404, "NOT_FOUND"),
        ("get", f"/v1/bulk/{running.id}/deliveries", other_auth, 404, "NOT_FOUND"),
        ("post", f"/v1/bulk/{running.id}/deliveries", headers, 409, "NOT_FINISHED"),
        ("post", f"/v1/bulk/{finished.id}/deliveries", headers, 409, "NO_DELIVERY"),
    ]
    for method, path, auth, status, code in cases:
        response = await client.request(method, path, headers=auth)
        body = await response.json()
        assert (response.status, body["code"]) == (status, code), (method, path, body)
        assert set(body) == {"message", "code"} and body["message"]
    empty = await client.get(f"/v1/jobs/{silent}/deliveries", headers=headers)
    assert (await empty.json())["deliveries"] == []

    response = await client.post(f"/v1/bulk/{hooked.id}/deliveries", headers=headers)
    assert response.status == 202, await response.json()
    redelivery = Job(f"webhook:bulk:{hooked.id}:r1", pool, _queue_name=quick.redis.queue_name)
    assert await redelivery.status() is ArqStatus.queued
    listed = await client.get(f"/v1/bulk/{hooked.id}/deliveries", headers=headers)
    assert (await listed.json())["deliveries"] == []  # nothing tried yet


def test_retry_waits_grow_to_their_cap_with_jitter_and_stay_few() -> None:
    defaults = WebhookSettings()
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(3600.0, 2.0 * 2 ** (attempt - 1))
        assert ceiling / 2 <= retry_delay(attempt, defaults, rng) <= ceiling
    # Even at the shortest waits the jitter allows, a day holds few attempts.
    elapsed, attempts = 0.0, 0
    while elapsed < defaults.retry_for_seconds:
        attempts += 1
        elapsed += min(defaults.retry_max_delay_seconds, 2.0 * 2 ** (attempts - 1)) / 2
    assert attempts < 70 < MAX_ATTEMPTS
