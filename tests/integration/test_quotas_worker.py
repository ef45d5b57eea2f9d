"""The end of a job settles its key's account, once (real Redis and S3, the worker task in-process): a
failed job refunds its credit, a succeeded one counts in the day's usage with its detections and
megapixels, a re-run or a second final write counts nothing again, the sweeper's failure refunds too, and
a bulk job's children are charged as they are queued."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from redis.asyncio import Redis

from shared.bulk import BulkStatus, BulkStore
from shared.jobs import BlurOptions, Detection, JobRecord, JobStatus
from shared.jobstore import JobStore
from shared.quotas import KeyLimits, QuotaStore
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.usage import UsageDay, UsageStore
from tests.fakes import passthrough_result
from tests.integration.conftest import ClientFactory
from tests.integration.test_bulk import USER_BUCKET, _ctx, pool, user_prefix  # noqa: F401
from tests.integration.test_worker_fail_closed import BrokenAnonymizer, _setup
from workers.bulk import expand_bulk
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize

pytestmark = pytest.mark.integration


class BigImage:
    """Stands in for the detectors: a 2000x1500 result, nothing found; Redis and S3 stay real."""

    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        return dataclasses.replace(passthrough_result(data), width=2000, height=1500)


async def today_usage(redis: Redis, settings: Settings, key: str) -> UsageDay:
    today = datetime.now(UTC).date()
    days = await UsageStore(redis, settings.redis.prefix).days(key, today, today)
    assert len(days) == 1, days
    return days[0]


async def charged_job(
    settings: Settings, store: ObjectStore, redis: Redis, anonymizer: Any, credits: int = 2
) -> tuple[dict[str, Any], dict[str, Any], JobStore, QuotaStore, str]:
    """A queued job whose key had ``credits`` and was charged one for it."""
    ctx, request, jobs = await _setup(settings, store, redis, anonymizer)
    quotas = QuotaStore(redis, settings.redis.prefix)
    await quotas.set_limits(request.owner, KeyLimits(credits=credits))
    assert await quotas.reserve(request.owner, request.id)
    return ctx, request.model_dump(mode="json"), jobs, quotas, request.owner


async def test_a_failed_job_refunds_its_credit_once(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    ctx, payload, jobs, quotas, key = await charged_job(settings, store, redis, BrokenAnonymizer("raise"))
    assert (await quotas.state(key)).credits_left == 1
    assert (await anonymize(ctx, payload))["status"] == "failed"
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight) == (2, 0)
    # The final write again (a duplicate run, the sweeper): nothing more is refunded or counted.
    record = await jobs.get(payload["id"])
    assert record is not None
    assert await jobs.finish(record) is JobStatus.FAILED
    assert (await anonymize(ctx, payload)).get("repeat") is True
    assert (await quotas.state(key)).credits_left == 2
    usage = await today_usage(redis, settings, key)
    assert (usage.submitted, usage.succeeded, usage.failed, usage.credits) == (1, 0, 1, 0)


async def test_a_succeeded_job_counts_once_however_often_it_is_rerun(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    ctx, payload, jobs, quotas, key = await charged_job(settings, store, redis, BigImage())
    payload["delete_source"] = False  # the re-run below reads the original again
    assert (await anonymize(ctx, payload))["status"] == "succeeded"
    record = await jobs.get(payload["id"])
    assert record is not None
    # A crash after the final write's reply was lost: the record is put back to running and run again.
    record.status = JobStatus.RUNNING
    await jobs.put(record)
    assert (await anonymize(ctx, payload))["status"] == "succeeded"
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight) == (1, 0)
    usage = await today_usage(redis, settings, key)
    assert (usage.submitted, usage.succeeded, usage.failed, usage.credits) == (1, 1, 0, 1)
    assert usage.megapixels == 3.0


async def test_the_final_script_twice_counts_detections_once(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    jobs, key = JobStore(redis, settings.redis.prefix), uuid.uuid4().hex[:16]
    faces = [Detection.model_validate({"class": "face", "score": 0.9, "box": [0, 0, 4, 4]})] * 2
    plate = Detection.model_validate({"class": "plate", "score": 0.8, "box": [0, 0, 9, 3]})
    record = JobRecord(
        id=uuid.uuid4().hex,
        owner=key,
        status=JobStatus.SUCCEEDED,
        options=BlurOptions(),
        input={"width": 1000, "height": 500, "format": "jpeg"},
        detections=[*faces, plate],
        finished_at=datetime.now(UTC),
    )
    assert await jobs.finish(record) is None
    # Written again as if not final (a re-run that found it running), then finished again.
    await redis.delete(f"{settings.redis.prefix}:job:{record.id}")
    assert await jobs.finish(record) is None
    usage = await today_usage(redis, settings, key)
    assert (usage.succeeded, usage.credits, usage.megapixels) == (1, 1, 0.5)
    assert usage.detections == {"face": 2, "plate": 1}


async def test_the_sweepers_failure_refunds(settings: Settings, store: ObjectStore, redis: Redis) -> None:
    _, payload, jobs, quotas, key = await charged_job(settings, store, redis, None, credits=1)
    record = await jobs.get(payload["id"])
    assert record is not None
    record.status, record.finished_at = JobStatus.FAILED, datetime.now(UTC)
    assert await jobs.fail_abandoned(record, now=datetime.now(UTC).timestamp()) == "ok"
    assert await jobs.fail_abandoned(record, now=datetime.now(UTC).timestamp()) == "failed"
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight) == (1, 0)


async def test_bulk_children_are_charged_and_the_unpaid_fail_insufficient_credits(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
    pool: ArqRedis,  # noqa: F811
    api_key: tuple[str, str],
    user_prefix: str,  # noqa: F811
) -> None:
    quotas = QuotaStore(redis, settings.redis.prefix)
    await quotas.set_limits(api_key[1], KeyLimits(credits=2, max_concurrent=1))
    client: TestClient[Any, Any] = await make_client(settings)
    headers = {"X-API-Key": api_key[0]}
    body = {"s3": {"bucket": USER_BUCKET, "prefix": user_prefix}}
    created = await (await client.post("/v1/bulk", json=body, headers=headers)).json()
    ctx = _ctx(settings, store, redis, pool)
    assert await expand_bulk(ctx, created["id"]) == {"status": "running", "total": 4}
    report = await (await client.get(f"/v1/bulk/{created['id']}", headers=headers)).json()
    codes = sorted((job.get("error") or {}).get("code", job["status"]) for job in report["jobs"])
    # Three images (two paid, max_concurrent left out for children) and one that is not an image.
    assert codes == ["INSUFFICIENT_CREDITS", "VALIDATION_ERROR", "queued", "queued"]
    state = await quotas.state(api_key[1])
    assert (state.credits_left, state.in_flight, state.used_today) == (0, 2, 2)

    # The page run again (its worker died mid-page), once more credits came: nobody is charged twice, and
    # the child refused the first time stays failed without keeping the new credit.
    await quotas.add_credits(api_key[1], 1)
    bulks = BulkStore(redis, settings.redis.prefix)
    bulk = await bulks.get(created["id"])
    assert bulk is not None
    bulk.status, bulk.listed, bulk.total, bulk.skipped, bulk.cursor = BulkStatus.LISTING, 0, 0, 0, None
    await bulks.put(bulk)
    assert await expand_bulk(ctx, created["id"]) == {"status": "running", "total": 4}
    state = await quotas.state(api_key[1])
    assert (state.credits_left, state.in_flight, state.used_today) == (1, 2, 2)
