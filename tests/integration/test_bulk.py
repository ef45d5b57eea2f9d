"""Bulk jobs against real Redis and SeaweedFS: request checks at the gateway, listing and queueing by the
worker's ``expand_bulk`` (no models needed: it only reads headers), progress through ``GET /v1/bulk``,
cancelling through ``DELETE /v1/bulk`` (the children run by the real task with a stand-in detector) and the
one ``bulk.finished`` webhook."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import cv2
import numpy as np
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from redis.asyncio import Redis
from standardwebhooks import Webhook

from shared.apikeys import ApiKeyStore
from shared.bulk import BulkStatus, BulkStore, child_job_id, finish_if_done
from shared.deliveries import DeliveryOutcome
from shared.jobs import BlurOptions, JobError, JobRequest, JobStatus
from shared.jobstore import JobStore
from shared.queue import deserialize, open_pool
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.webhooks import ID_HEADER, message_id
from tests.fakes import passthrough_result, worker_state
from tests.integration.conftest import ClientFactory
from tests.integration.test_gateway_jobs import with_changes
from tests.webhook_receiver import Receiver
from workers.bulk import expand_bulk
from workers.context import CTX_KEY
from workers.notify import Delivery, deliver
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"


def _png(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture
def user_prefix(store: ObjectStore) -> str:
    """A customer's folder: three images, a text file, and a '.jpg' that is not an image."""
    prefix = f"claims/{uuid.uuid4().hex[:8]}/"
    for name, size in (("a.png", (40, 30)), ("b.png", (64, 48)), ("sub/c.png", (20, 10))):
        store.put(prefix + name, _png(*size), "image/png", bucket=USER_BUCKET)
    store.put(prefix + "notes.txt", b"not an image", "text/plain", bucket=USER_BUCKET)
    store.put(prefix + "broken.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg", bucket=USER_BUCKET)
    return prefix


@pytest.fixture
async def pool(settings: Settings) -> Any:
    arq = await open_pool(settings.redis)
    yield arq
    await arq.aclose()


async def _arq_status(pool: ArqRedis, settings: Settings, job_id: str) -> ArqStatus:
    return await Job(job_id, pool, _queue_name=settings.redis.queue_name).status()


def _ctx(settings: Settings, store: ObjectStore, redis: Redis, pool: ArqRedis) -> dict[str, Any]:
    state = worker_state(settings, redis, store, name="bulk-test")
    return {CTX_KEY: state, "redis": pool}


async def test_bulk_request_is_checked(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str]
) -> None:
    client = await make_client(settings)
    headers = {"X-API-Key": api_key[0]}
    cases: list[tuple[object, int, str]] = [
        ({}, 400, "s3 must be an object"),
        ({"s3": {"bucket": "someone-else"}}, 400, "not readable"),
        ({"s3": {"bucket": USER_BUCKET}, "output": {"bucket": "nope"}}, 400, "not writable"),
        ({"s3": {"bucket": USER_BUCKET}, "limit": 0}, 400, "limit"),
        ({"s3": {"bucket": USER_BUCKET}, "colour": "red"}, 400, "unknown option"),
        ({"s3": {"bucket": USER_BUCKET}, "blur": 999}, 400, "blur"),
        ({"s3": {"bucket": USER_BUCKET}, "callback_url": "ftp://example.com/x"}, 400, "http"),
        ({"s3": {"bucket": USER_BUCKET}, "callback_url": "http://127.0.0.1:9/hook"}, 400, "loopback"),
        ([1, 2], 400, "JSON object"),
    ]
    for body, status, words in cases:
        response = await client.post("/v1/bulk", json=body, headers=headers)
        payload = await response.json()
        assert response.status == status, (body, payload)
        assert words in payload["message"], (body, payload)
        assert set(payload) == {"message", "code"}
    response = await client.post(
        "/v1/bulk", data=b"{", headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status == 400
    response = await client.post("/v1/bulk", json={"s3": {"bucket": USER_BUCKET}})
    assert response.status == 401
    response = await client.get("/v1/bulk/unknown", headers=headers)
    assert response.status == 404


async def test_bulk_lists_probes_and_queues_children(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    other_auth: dict[str, str],
    user_prefix: str,
) -> None:
    client = await make_client(settings)
    headers = {"X-API-Key": api_key[0]}
    body = {
        "s3": {"bucket": USER_BUCKET, "prefix": user_prefix},
        "output": {"bucket": "veil-user-output", "prefix": "blurred/"},
        "targets": "faces",
        "callback_url": "https://hooks.example.com/veil",
    }
    response = await client.post("/v1/bulk", json=body, headers=headers)
    created = await response.json()
    assert response.status == 202, created
    assert response.headers["Location"] == f"/v1/bulk/{created['id']}"
    assert created["status"] == "listing"
    assert await _arq_status(pool, settings, f"bulk:{created['id']}") is ArqStatus.queued

    ctx = _ctx(settings, store, redis, pool)
    outcome = await expand_bulk(ctx, created["id"])
    assert outcome == {"status": "running", "total": 4}
    assert await expand_bulk(ctx, created["id"]) == {"status": "nothing to do"}  # a re-run queues nothing

    response = await client.get(f"/v1/bulk/{created['id']}", headers=headers)
    report = await response.json()
    assert response.status == 200, report
    assert report["status"] == "running"
    assert (report["total"], report["skipped"], report["truncated"]) == (4, 1, False)
    assert report["counts"] == {"queued": 3, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 0}
    by_key = {job["key"].removeprefix(user_prefix): job for job in report["jobs"]}
    assert set(by_key) == {"a.png", "b.png", "sub/c.png", "broken.jpg"}
    assert by_key["broken.jpg"]["status"] == "failed"
    assert by_key["broken.jpg"]["error"]["code"] == "VALIDATION_ERROR"
    broken = await client.get(f"/v1/jobs/{by_key['broken.jpg']['id']}", headers=headers)
    assert (await broken.json())["input"] is None  # never read: no size or format made up
    # The child that failed at listing time is still announced to the webhook receiver.
    broken_id = by_key["broken.jpg"]["id"]
    assert await _arq_status(pool, settings, f"webhook:{broken_id}") is ArqStatus.queued

    # Each child is an ordinary job: queued with the probed size, the original kept, the output named.
    child_id = child_job_id(created["id"], user_prefix + "sub/c.png")
    assert await _arq_status(pool, settings, child_id) is ArqStatus.queued
    info = await Job(child_id, pool, _queue_name=settings.redis.queue_name, _deserializer=deserialize).info()
    assert info is not None
    request = JobRequest.model_validate(info.args[0])
    assert (request.input.width, request.input.height) == (20, 10)
    assert request.delete_source is False
    assert request.output is not None
    assert request.output.key == "blurred/sub/c.png"
    assert request.options.targets == ("faces",)

    # Pages, and nobody else's.
    response = await client.get(f"/v1/bulk/{created['id']}?limit=2", headers=headers)
    page = await response.json()
    assert len(page["jobs"]) == 2
    assert page["links"]["next"].endswith("offset=2&limit=2")
    response = await client.get(f"/v1/bulk/{created['id']}", headers=other_auth)
    assert response.status == 404
    record = await BulkStore(redis, settings.redis.prefix).get(created["id"])
    assert record is not None
    assert record.status is BulkStatus.RUNNING
    child = await JobStore(redis, settings.redis.prefix).get(child_id)
    assert child is not None
    assert child.status is JobStatus.QUEUED


async def test_bulk_lists_in_pages_each_its_own_job(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    user_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("workers.bulk.PAGE_SIZE", 2)
    client = await make_client(settings)
    response = await client.post(
        "/v1/bulk",
        json={"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}},
        headers={"X-API-Key": api_key[0]},
    )
    bulk_id = (await response.json())["id"]
    ctx = _ctx(settings, store, redis, pool)
    outcomes = [await expand_bulk(ctx, bulk_id, page) for page in range(3)]
    assert [outcome["status"] for outcome in outcomes] == ["listing", "listing", "running"]
    assert await expand_bulk(ctx, bulk_id, 1) == {"status": "nothing to do"}  # a page delivered twice
    for page in (1, 2):
        assert await _arq_status(pool, settings, f"bulk:{bulk_id}:{page}") is ArqStatus.queued
    record = await BulkStore(redis, settings.redis.prefix).get(bulk_id)
    assert record is not None
    assert (record.total, record.skipped, record.listed) == (4, 1, 5)
    assert len(await BulkStore(redis, settings.redis.prefix).children(bulk_id)) == 4


async def test_bulk_limit_truncates(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    user_prefix: str,
) -> None:
    client = await make_client(settings)
    body = {"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}, "limit": 2}
    response = await client.post("/v1/bulk", json=body, headers={"X-API-Key": api_key[0]})
    bulk_id = (await response.json())["id"]
    outcome = await expand_bulk(_ctx(settings, store, redis, pool), bulk_id)
    assert outcome["status"] == "running"
    record = await BulkStore(redis, settings.redis.prefix).get(bulk_id)
    assert record is not None
    assert record.truncated
    assert record.listed == 2


async def test_bulk_waits_while_the_queue_is_half_full(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    user_prefix: str,
) -> None:
    queue = f"veil:test-bulk-wait:{uuid.uuid4().hex}"
    limited = with_changes(settings, redis={"queue_name": queue, "max_queued_jobs": 4})
    client = await make_client(limited)
    body = {"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}}
    response = await client.post("/v1/bulk", json=body, headers={"X-API-Key": api_key[0]})
    created = await response.json()
    assert response.status == 202, created
    await pool.zadd(queue, {"someone-elses-job-1": 0, "someone-elses-job-2": 0})  # 3 queued: >= 4 / 2

    ctx = _ctx(limited, store, redis, pool)
    outcome = await expand_bulk(ctx, created["id"])
    assert outcome == {"status": "waiting for room in the queue", "queued": 3}
    waiting = Job(f"bulk:{created['id']}:wait1", pool, _queue_name=queue)
    assert await waiting.status() is ArqStatus.deferred  # not due yet
    record = await BulkStore(redis, settings.redis.prefix).get(created["id"])
    assert record is not None and (record.status, record.total) == (BulkStatus.LISTING, 0)

    # The others' jobs finish, and so does the first expansion (arq drops a job from the queue when done).
    await pool.zrem(queue, "someone-elses-job-1", "someone-elses-job-2", f"bulk:{created['id']}")
    assert await expand_bulk(ctx, created["id"], 0, 1) == {"status": "running", "total": 4}


# -- cancel, progress and bulk.finished ----------------------------------------------------------------------


class Gate:
    """A stand-in detector: the input comes back as the "blurred" image; while ``hold`` is set it waits
    (in its inference thread) until released, so a test can act while a child is running."""

    def __init__(self) -> None:
        self.providers = ["CPUExecutionProvider"]
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        self.calls += 1
        if self.hold:
            self.entered.set()
            self.release.wait(30)
        return passthrough_result(data)


def _hooked(settings: Settings) -> Settings:
    """Loopback receivers allowed; a queue of its own, so the arq jobs a test looks for are its own."""
    return with_changes(
        settings,
        url_allowlist=["127.0.0.1"],  # type: ignore[arg-type]
        redis={"queue_name": f"veil:test-bulk:{uuid.uuid4().hex[:8]}"},
    )


async def _payload(pool: ArqRedis, settings: Settings, job_id: str) -> dict[str, Any]:
    info = await Job(job_id, pool, _queue_name=settings.redis.queue_name, _deserializer=deserialize).info()
    assert info is not None, job_id
    payload = info.args[0]
    assert isinstance(payload, dict)
    return payload


async def _report(client: Any, bulk_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/v1/bulk/{bulk_id}", headers=headers)
    report: dict[str, Any] = await response.json()
    assert response.status == 200, report
    return report


async def test_cancel_skips_what_has_not_started_and_bulk_finished_goes_out_once(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    other_auth: dict[str, str],
    user_prefix: str,
    receiver: Receiver,
) -> None:
    hooked = _hooked(settings)
    client = await make_client(hooked)
    headers = {"X-API-Key": api_key[0]}
    output = f"blurred-{uuid.uuid4().hex[:8]}/"
    body = {
        "s3": {"bucket": USER_BUCKET, "prefix": user_prefix},
        "output": {"bucket": "veil-user-output", "prefix": output},
        "callback_url": receiver.url,
    }
    response = await client.post("/v1/bulk", json=body, headers=headers)
    bulk_id = (await response.json())["id"]
    gate = Gate()
    state = worker_state(hooked, redis, store, gate, name="bulk-cancel")
    ctx: dict[str, Any] = {CTX_KEY: state, "redis": pool}
    assert await expand_bulk(ctx, bulk_id) == {"status": "running", "total": 4}
    keys = {"a.png", "b.png", "sub/c.png"}
    ids = {name: child_job_id(bulk_id, user_prefix + name) for name in keys}

    # a.png starts and is held in detection; the others are still queued.
    gate.hold = True
    first = asyncio.ensure_future(anonymize(ctx, await _payload(pool, hooked, ids["a.png"])))
    assert await asyncio.to_thread(gate.entered.wait, 30)
    report = await _report(client, bulk_id, headers)
    assert report["status"] == "running"
    progress = report["progress"]
    assert (progress["total"], progress["queued"], progress["running"]) == (4, 2, 1)
    assert (progress["succeeded"], progress["failed"], progress["cancelled"]) == (0, 1, 0)

    # Bad cancels first: nobody else's, nothing unknown, not without a key.
    for path, auth, status in (
        (f"/v1/bulk/{bulk_id}", other_auth, 404),
        ("/v1/bulk/unknown", headers, 404),
        (f"/v1/bulk/{bulk_id}", {}, 401),
    ):
        refused = await client.delete(path, headers=auth)
        assert refused.status == status
        assert set(await refused.json()) == {"message", "code"}
    response = await client.delete(f"/v1/bulk/{bulk_id}", headers=headers)
    cancelled = await response.json()
    assert response.status == 202, cancelled
    assert cancelled["status"] == "cancelling" and cancelled["cancelled_at"]
    assert (await client.delete(f"/v1/bulk/{bulk_id}", headers=headers)).status == 202  # asked twice: same

    # The children not started end CANCELLED when a worker comes to them: never read, nothing written.
    for name in ("b.png", "sub/c.png"):
        outcome = await anonymize(ctx, await _payload(pool, hooked, ids[name]))
        assert outcome == {"status": "failed"}
        record = await state.jobs.get(ids[name])
        assert record is not None and record.error is not None
        assert (record.error.code, record.started_at, record.attempts) == ("CANCELLED", None, 0)
        assert not store.exists(output + name, bucket="veil-user-output")
        assert store.exists(user_prefix + name, bucket=USER_BUCKET)  # the original is the client's
        assert await _arq_status(pool, hooked, f"webhook:{ids[name]}") is ArqStatus.not_found
    assert gate.calls == 1
    report = await _report(client, bulk_id, headers)
    assert report["status"] == "cancelling"  # a.png still runs
    assert report["progress"]["cancelled"] == 2 and report["progress"]["running"] == 1
    assert await _arq_status(pool, hooked, f"webhook:bulk:{bulk_id}") is ArqStatus.not_found

    # The started one finishes; then the bulk job is over, and bulk.finished is queued once.
    gate.release.set()
    assert await first == {"status": "succeeded"}
    assert store.exists(output + "a.png", bucket="veil-user-output")
    report = await _report(client, bulk_id, headers)
    assert report["status"] == "cancelled" and report["finished_at"]
    assert report["progress"] == {
        "total": 4,
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 2,
        "rate_per_second": report["progress"]["rate_per_second"],
        "eta_seconds": 0,
    }
    assert report["progress"]["rate_per_second"] > 0
    assert report["counts"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 2}
    assert await _arq_status(pool, hooked, f"webhook:bulk:{bulk_id}") is ArqStatus.queued
    bulks = BulkStore(redis, settings.redis.prefix)
    assert not await finish_if_done(bulks, pool, hooked.redis.queue_name, bulk_id)  # once only
    response = await client.delete(f"/v1/bulk/{bulk_id}", headers=headers)
    finished = await response.json()
    assert (response.status, finished["code"]) == (409, "BULK_FINISHED"), finished
    assert "cancelled" in finished["message"]

    # bulk.finished: signed with the owner's secret, the bulk job's JSON (no image, no owner).
    key = await ApiKeyStore(redis, settings.redis.prefix).get(api_key[1])
    assert key is not None and key.webhook_secret
    delivery = Delivery(kind="bulk", subject_id=bulk_id, callback_url=receiver.url, queued_at=time.time())
    attempt = await deliver(hooked, redis, delivery, 1)
    assert attempt is not None and attempt.outcome is DeliveryOutcome.DELIVERED
    sent, received = receiver.received[-1]
    event = Webhook(key.webhook_secret).verify(sent, received)
    assert received[ID_HEADER] == message_id(bulk_id, "bulk.finished")
    assert event["event"] == "bulk.finished"
    assert event["bulk"]["status"] == "cancelled" and event["bulk"]["progress"]["cancelled"] == 2
    assert "owner" not in event["bulk"] and "jobs" not in event["bulk"]


async def test_cancel_while_listing_stops_listing(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    user_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("workers.bulk.PAGE_SIZE", 2)
    hooked = _hooked(settings)
    client = await make_client(hooked)
    headers = {"X-API-Key": api_key[0]}
    body = {"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}}
    bulk_id = (await (await client.post("/v1/bulk", json=body, headers=headers)).json())["id"]
    state = worker_state(hooked, redis, store, Gate(), name="bulk-cancel-listing")
    ctx: dict[str, Any] = {CTX_KEY: state, "redis": pool}
    assert (await expand_bulk(ctx, bulk_id, 0))["status"] == "listing"
    response = await client.delete(f"/v1/bulk/{bulk_id}", headers=headers)
    assert response.status == 202
    assert (await response.json())["status"] == "cancelling"
    listed = await BulkStore(redis, settings.redis.prefix).children(bulk_id)
    assert await expand_bulk(ctx, bulk_id, 1) == {"status": "cancelled", "total": len(listed)}
    assert await _arq_status(pool, hooked, f"bulk:{bulk_id}:2") is ArqStatus.not_found  # no next page
    for job_id, _ in listed:
        await anonymize(ctx, await _payload(pool, hooked, job_id))
    report = await _report(client, bulk_id, headers)
    assert report["status"] == "cancelled"
    assert report["progress"]["cancelled"] == len(listed) and report["progress"]["queued"] == 0
    assert report["total"] == len(listed) < 4  # the rest was never listed


async def test_a_child_ended_elsewhere_is_counted_when_the_bulk_job_is_read(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,
    api_key: tuple[str, str],
    user_prefix: str,
) -> None:
    # The sweeper fails a job no run will finish without knowing its bulk job: a read of the bulk job
    # counts its started children whose record is final.
    hooked = _hooked(settings)
    client = await make_client(hooked)
    headers = {"X-API-Key": api_key[0]}
    body = {"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}, "limit": 2}
    bulk_id = (await (await client.post("/v1/bulk", json=body, headers=headers)).json())["id"]
    state = worker_state(hooked, redis, store, Gate(), name="bulk-reconcile")
    ctx: dict[str, Any] = {CTX_KEY: state, "redis": pool}
    await expand_bulk(ctx, bulk_id)
    bulks = BulkStore(redis, settings.redis.prefix)
    (first, _), (second, _) = await bulks.children(bulk_id)
    assert await anonymize(ctx, await _payload(pool, hooked, first)) == {"status": "succeeded"}
    record = await state.jobs.get(second)
    assert record is not None
    await bulks.progress.started(bulk_id, second)  # a run started it, then died
    assert await bulks.progress.bulk_of(second) == bulk_id
    record.status, record.error = JobStatus.FAILED, JobError(code="JOB_TIMEOUT", message="gone")
    assert await state.jobs.finish(record) is None  # what the sweeper writes
    assert (await _report(client, bulk_id, headers))["status"] == "finished"
    counters = await bulks.progress.counters(bulk_id)
    assert (counters.succeeded, counters.failed, counters.running) == (1, 1, 0)
    assert counters.finished_at is not None
