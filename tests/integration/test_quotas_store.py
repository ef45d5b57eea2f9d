"""Credits and quotas in real Redis (shared/quotas.py): one atomic reservation, no overspend under
concurrency, caps with the time until they lift, releases, and the usage days (shared/usage.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

import pytest
from redis.asyncio import Redis

from shared.errors import InsufficientCreditsError, QuotaExceededError
from shared.jobs import BlurOptions, JobRecord, JobStatus
from shared.jobstore import JobStore
from shared.quotas import KeyLimits, QuotaStore
from shared.redisutil import resolve
from shared.settings import Settings
from shared.usage import UsageStore, usage_day_key

pytestmark = pytest.mark.integration

NOON = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def quotas(redis: Redis, settings: Settings) -> QuotaStore:
    return QuotaStore(redis, settings.redis.prefix)


def new_key() -> str:
    return uuid.uuid4().hex[:16]


async def reserve_all(quotas: QuotaStore, key: str, count: int) -> list[str]:
    """``count`` reservations at once; what each one came to."""

    async def one() -> str:
        try:
            await quotas.reserve(key, uuid.uuid4().hex)
        except InsufficientCreditsError:
            return "402"
        return "ok"

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_twenty_concurrent_reservations_against_five_credits_get_exactly_five(
    quotas: QuotaStore,
) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(credits=5))
    outcomes = await reserve_all(quotas, key, 20)
    assert outcomes.count("ok") == 5 and outcomes.count("402") == 15
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight, state.used_today, state.used_month) == (0, 5, 5, 5)


async def test_no_limits_counts_but_never_refuses(quotas: QuotaStore) -> None:
    key = new_key()
    assert await reserve_all(quotas, key, 10) == ["ok"] * 10
    state = await quotas.state(key)
    assert state.limits == KeyLimits() and state.credits_left is None
    assert (state.in_flight, state.used_today) == (10, 10)


async def test_daily_cap_says_when_the_day_ends(quotas: QuotaStore) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(daily_limit=2))
    for _ in range(2):
        await quotas.reserve(key, uuid.uuid4().hex, NOON)
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.reserve(key, uuid.uuid4().hex, NOON)
    assert refused.value.limit == "daily" and refused.value.code == "QUOTA_EXCEEDED"
    assert refused.value.retry_after == 12 * 3600
    # The next UTC day starts afresh.
    await quotas.reserve(key, uuid.uuid4().hex, datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC))


async def test_monthly_cap_says_when_the_month_ends(quotas: QuotaStore) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(monthly_limit=1))
    await quotas.reserve(key, uuid.uuid4().hex, NOON)
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.reserve(key, uuid.uuid4().hex, NOON)
    assert refused.value.limit == "monthly" and refused.value.retry_after == 12 * 3600


async def test_max_concurrent_frees_a_slot_when_a_job_ends(
    quotas: QuotaStore, redis: Redis, settings: Settings
) -> None:
    key, job_id = new_key(), uuid.uuid4().hex
    await quotas.set_limits(key, KeyLimits(max_concurrent=1))
    await quotas.reserve(key, job_id)
    with pytest.raises(QuotaExceededError) as refused:
        await quotas.reserve(key, uuid.uuid4().hex)
    assert refused.value.limit == "concurrent" and refused.value.retry_after == 2
    # A bulk job's children leave max_concurrent out.
    await quotas.reserve(key, uuid.uuid4().hex, concurrency=False)
    jobs = JobStore(redis, settings.redis.prefix)
    record = JobRecord(id=job_id, owner=key, status=JobStatus.SUCCEEDED, options=BlurOptions())
    assert await jobs.finish(record) is None
    assert (await quotas.state(key)).in_flight == 1


async def test_a_repeated_reservation_charges_once(quotas: QuotaStore) -> None:
    key, job_id = new_key(), uuid.uuid4().hex
    await quotas.set_limits(key, KeyLimits(credits=3))
    assert await quotas.reserve(key, job_id) is True
    assert await quotas.reserve(key, job_id) is False
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight, state.used_today) == (2, 1, 1)


async def test_release_gives_everything_back_once(quotas: QuotaStore) -> None:
    key, job_id = new_key(), uuid.uuid4().hex
    await quotas.set_limits(key, KeyLimits(credits=1, daily_limit=1))
    await quotas.reserve(key, job_id)
    assert await quotas.release(key, job_id) is True
    assert await quotas.release(key, job_id) is False
    state = await quotas.state(key)
    assert (state.credits_left, state.in_flight, state.used_today, state.used_month) == (1, 0, 0, 0)
    await quotas.reserve(key, uuid.uuid4().hex)  # the credit and the day's one submission are back


async def test_look_only_check_charges_nothing(quotas: QuotaStore) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(credits=1))
    await quotas.check(key)
    assert (await quotas.state(key)).credits_left == 1
    await quotas.set_limits(key, KeyLimits(credits=0), fields={"credits"})
    with pytest.raises(InsufficientCreditsError, match="0 credit"):
        await quotas.check(key)


async def test_set_limits_changes_only_the_fields_named(quotas: QuotaStore) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(credits=10, daily_limit=5, monthly_limit=50, max_concurrent=2))
    await quotas.set_limits(key, KeyLimits(daily_limit=7), fields={"daily_limit", "max_concurrent"})
    state = await quotas.state(key)
    assert state.limits == KeyLimits(credits=10, daily_limit=7, monthly_limit=50, max_concurrent=None)
    assert await quotas.add_credits(key, 5) == 15
    with pytest.raises(ValueError, match="unknown"):
        await quotas.set_limits(key, KeyLimits(), fields={"rate"})
    await quotas.set_limits(key, KeyLimits())  # every limit off
    assert (await quotas.state(key)).limits == KeyLimits()


async def test_erase_forgets_limits_and_usage(quotas: QuotaStore, redis: Redis, settings: Settings) -> None:
    key = new_key()
    await quotas.set_limits(key, KeyLimits(credits=4, daily_limit=3))
    await quotas.reserve(key, uuid.uuid4().hex)
    usage = UsageStore(redis, settings.redis.prefix)
    today = datetime.now(UTC).date()
    assert [day.submitted for day in await usage.days(key, today, today)] == [1]
    await quotas.erase(key)
    await usage.erase(key)
    assert await redis.keys(f"{settings.redis.prefix}:quota:{key}:*") == []
    assert await redis.keys(f"{settings.redis.prefix}:usage:{key}*") == []


async def test_usage_days_skip_days_without_use_and_refuse_bad_ranges(
    redis: Redis, settings: Settings
) -> None:
    key, prefix = new_key(), settings.redis.prefix
    await resolve(
        redis.hset(usage_day_key(prefix, key, date(2026, 1, 2)), mapping={"submitted": 3, "det:face": 2})
    )
    await resolve(redis.hset(usage_day_key(prefix, key, date(2026, 1, 5)), mapping={"pixels": 1_500_000}))
    usage = UsageStore(redis, prefix)
    days = await usage.days(key, date(2026, 1, 1), date(2026, 1, 31))
    assert [(d.day.day, d.submitted, d.detections, d.megapixels) for d in days] == [
        (2, 3, {"face": 2}, 0.0),
        (5, 0, {}, 1.5),
    ]
    with pytest.raises(ValueError, match="before it starts"):
        await usage.days(key, date(2026, 1, 5), date(2026, 1, 1))
    with pytest.raises(ValueError, match="at most"):
        await usage.days(key, date(2024, 1, 1), date(2026, 1, 1))
    await usage.erase(key, date(2026, 1, 10))
    assert await usage.days(key, date(2026, 1, 1), date(2026, 1, 31)) == []


async def test_owner_index_lists_and_forgets_a_keys_jobs(redis: Redis, settings: Settings) -> None:
    jobs, owner = JobStore(redis, settings.redis.prefix), new_key()
    ids = [uuid.uuid4().hex for _ in range(3)]
    for job_id in ids[:2]:
        await jobs.put(JobRecord(id=job_id, owner=owner, options=BlurOptions()))
    assert await jobs.put_if_absent(JobRecord(id=ids[2], owner=owner, options=BlurOptions()))
    await jobs.put(JobRecord(id=uuid.uuid4().hex, owner="someone else", options=BlurOptions()))
    assert sorted(await jobs.ids_of_owner(owner)) == sorted(ids)
    await jobs.forget_owner(owner)
    assert await jobs.ids_of_owner(owner) == []
