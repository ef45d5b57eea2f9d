"""Credits and quotas per API key, checked and charged atomically in Redis.

Each key may have (all optional, none by default):

* a credit balance: one credit per image, taken at submission, given back when the job fails;
* a daily and a monthly cap on accepted submissions (UTC days and calendar months);
* a cap on its jobs in flight (queued or running).

:meth:`QuotaStore.reserve` is one Lua script: every check and the charge, or nothing, so 20 concurrent
submissions against 5 credits get exactly 5 through. A reservation is remembered per job (its charge, the
day and month it counted in) until the job's final record is written (``shared/jobstore.py``: the same
script refunds a failed job's credits, once) or :meth:`QuotaStore.release` gives it back (a job refused
before it was queued). A reservation no job ever ended (a gateway killed between the two) is dropped
after a record's lifetime, without refund.

Keys (``<p>`` the Redis prefix, ``<k>`` the key id): ``<p>:quota:<k>:limits`` (hash),
``<p>:quota:<k>:credits`` (the balance; absent: no credit limit), ``<p>:quota:<k>:inflight`` (sorted set
of job ids by reservation time), ``<p>:quota:<k>:held`` (job id → "charged day month"),
``<p>:quota:<k>:month:<YYYY-MM>`` (the month's count) and the day's ``submitted`` in its usage hash
(``shared/usage.py``). One Redis, not a cluster: the scripts name the day's and month's keys themselves.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.errors import InsufficientCreditsError, QuotaExceededError
from shared.usage import USAGE_TTL_SECONDS, usage_day_key, usage_prefix

# Reservations older than this are dropped: their job's record is gone (it lives 48 h after its last write).
STALE_RESERVATION_SECONDS = 3 * 24 * 3600
MONTH_TTL_SECONDS = 400 * 24 * 3600
CONCURRENT_RETRY_AFTER_SECONDS = 2.0
LIMIT_FIELDS = ("daily_limit", "monthly_limit", "max_concurrent")

# KEYS: limits, credits, inflight, held, month count, day usage, reserved marker.
# ARGV: job id, now (Unix s), cost, "day month" of now, usage TTL, month TTL, stale before (Unix s),
# mode ('reserve' or 'look'), '1' to apply max_concurrent, marker TTL.
# Returns {0, 1} reserved now, {0, 0} fine (looked, or reserved before), {1, balance} too few credits,
# {2, cap} daily, {3, cap} monthly, {4, cap} concurrent cap reached.
_RESERVE = """
local reserve = ARGV[8] == 'reserve'
if reserve and redis.call('EXISTS', KEYS[7]) == 1 then
    return {0, 0}
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[7], 'LIMIT', 0, 100)
if #stale > 0 then
    redis.call('ZREM', KEYS[3], unpack(stale))
    redis.call('HDEL', KEYS[4], unpack(stale))
end
local cost = tonumber(ARGV[3])
local credits = redis.call('GET', KEYS[2])
if credits and tonumber(credits) < cost then
    return {1, tonumber(credits)}
end
local limits = redis.call('HMGET', KEYS[1], 'daily_limit', 'monthly_limit', 'max_concurrent')
if limits[1] and tonumber(redis.call('HGET', KEYS[6], 'submitted') or '0') >= tonumber(limits[1]) then
    return {2, tonumber(limits[1])}
end
if limits[2] and tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(limits[2]) then
    return {3, tonumber(limits[2])}
end
if ARGV[9] == '1' and limits[3] and redis.call('ZCARD', KEYS[3]) >= tonumber(limits[3]) then
    return {4, tonumber(limits[3])}
end
if not reserve then
    return {0, 0}
end
local charged = 0
if credits then
    redis.call('DECRBY', KEYS[2], cost)
    charged = cost
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], charged .. ' ' .. ARGV[4])
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('HINCRBY', KEYS[6], 'submitted', 1)
redis.call('EXPIRE', KEYS[6], ARGV[5])
redis.call('SET', KEYS[7], '1', 'EX', ARGV[10])
return {0, 1}
"""

# Undo a reservation whose job was never queued. KEYS: credits, inflight, held, reserved marker.
# ARGV: job id, usage key prefix ('<p>:usage:<k>:'), month key prefix. Returns 1 if there was one.
_RELEASE = """
local held = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
if not held then
    return 0
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local charged, day, month = string.match(held, '^(%d+) (%S+) (%S+)$')
if tonumber(charged) > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], charged)
end
local usage = ARGV[2] .. day
if tonumber(redis.call('HGET', usage, 'submitted') or '0') > 0 then
    redis.call('HINCRBY', usage, 'submitted', -1)
end
local count = ARGV[3] .. month
if tonumber(redis.call('GET', count) or '0') > 0 then
    redis.call('DECR', count)
end
return 1
"""


class KeyLimits(BaseModel):
    """A key's limits; ``None``: no limit."""

    credits: int | None = Field(default=None, description="Credit balance: one credit per processed image.")
    daily_limit: int | None = Field(default=None, ge=0, description="Accepted submissions per UTC day.")
    monthly_limit: int | None = Field(default=None, ge=0, description="Per UTC calendar month.")
    max_concurrent: int | None = Field(default=None, ge=0, description="Jobs queued or running at once.")


class QuotaState(BaseModel):
    limits: KeyLimits
    credits_left: int | None
    used_today: int
    used_month: int
    in_flight: int


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


def seconds_to_next_day(now: datetime) -> float:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (tomorrow - now).total_seconds()


def seconds_to_next_month(now: datetime) -> float:
    first = date(now.year + now.month // 12, now.month % 12 + 1, 1)
    return (datetime.combine(first, datetime.min.time(), UTC) - now).total_seconds()


def quota_key(prefix: str, key_id: str, part: str) -> str:
    """``<prefix>:quota:<key id>:<part>``: limits, credits, inflight, held or ``month:<YYYY-MM>``."""
    return f"{prefix}:quota:{key_id}:{part}"


def _int(raw: object) -> int:
    if raw is None:
        return 0
    return int(raw.decode() if isinstance(raw, bytes) else str(raw))


class QuotaStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)

    # -- key names --------------------------------------------------------------------------------------

    def key(self, key_id: str, part: str) -> str:
        return quota_key(self._prefix, key_id, part)

    def month_key(self, key_id: str, month: str) -> str:
        return self.key(key_id, f"month:{month}")

    def reserved_key(self, job_id: str) -> str:
        return f"{self._prefix}:quota:reserved:{job_id}"

    # -- limits --------------------------------------------------------------------------------------------

    async def set_limits(self, key_id: str, limits: KeyLimits, *, fields: set[str] | None = None) -> None:
        """Set ``key_id``'s limits (only ``fields`` when given); ``None`` removes a limit; ``credits`` sets
        the balance."""
        chosen = set(KeyLimits.model_fields) if fields is None else fields
        unknown = chosen - set(KeyLimits.model_fields)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        async with self._redis.pipeline(transaction=True) as pipe:
            for name in LIMIT_FIELDS:
                if name not in chosen:
                    continue
                value = getattr(limits, name)
                if value is None:
                    pipe.hdel(self.key(key_id, "limits"), name)
                else:
                    pipe.hset(self.key(key_id, "limits"), name, str(value))
            if "credits" in chosen:
                if limits.credits is None:
                    pipe.delete(self.key(key_id, "credits"))
                else:
                    pipe.set(self.key(key_id, "credits"), limits.credits)
            await pipe.execute()

    async def add_credits(self, key_id: str, amount: int) -> int:
        """Add ``amount`` (negative: take) to the balance and return it; a key without one gets one."""
        return int(await self._redis.incrby(self.key(key_id, "credits"), amount))

    async def state(self, key_id: str, now: datetime | None = None) -> QuotaState:
        today = (now or datetime.now(UTC)).date()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key(key_id, "limits"))
            pipe.get(self.key(key_id, "credits"))
            pipe.hget(usage_day_key(self._prefix, key_id, today), "submitted")
            pipe.get(self.month_key(key_id, month_of(today)))
            pipe.zcard(self.key(key_id, "inflight"))
            raw_limits, credits, today_count, month_count, in_flight = await pipe.execute()
        values = {
            (name.decode() if isinstance(name, bytes) else name): _int(value)
            for name, value in raw_limits.items()
        }
        credits_left = None if credits is None else _int(credits)
        limits = KeyLimits(credits=credits_left, **{k: v for k, v in values.items() if k in LIMIT_FIELDS})
        return QuotaState(
            limits=limits,
            credits_left=credits_left,
            used_today=_int(today_count),
            used_month=_int(month_count),
            in_flight=int(in_flight),
        )

    # -- submissions ---------------------------------------------------------------------------------------

    async def reserve(
        self,
        key_id: str,
        job_id: str,
        now: datetime | None = None,
        *,
        cost: int = 1,
        concurrency: bool = True,
    ) -> bool:
        """Check every limit and charge ``job_id`` to ``key_id`` in one step, or raise
        :class:`InsufficientCreditsError` / :class:`QuotaExceededError` and change nothing. Counts the
        submission in today's usage. Returns False if the job was reserved already (nothing charged
        again). ``concurrency=False`` leaves out ``max_concurrent`` (a bulk job's children)."""
        return await self._run(key_id, job_id, now, cost, concurrency, look=False)

    async def check(self, key_id: str, now: datetime | None = None, *, cost: int = 1) -> None:
        """What :meth:`reserve` would raise now, charging nothing (before fetching a URL, say)."""
        await self._run(key_id, "", now, cost, True, look=True)

    async def release(self, key_id: str, job_id: str) -> bool:
        """Give back a reservation whose job was never queued (credits, counts, its slot)."""
        keys = [
            self.key(key_id, "credits"),
            self.key(key_id, "inflight"),
            self.key(key_id, "held"),
            self.reserved_key(job_id),
        ]
        args = [job_id, usage_prefix(self._prefix, key_id), self.month_key(key_id, "")]
        return bool(await self._release(keys=keys, args=args))

    async def erase(self, key_id: str, now: datetime | None = None) -> None:
        """Forget the key's limits, balance, reservations and monthly counts (its usage: ``UsageStore``)."""
        today = (now or datetime.now(UTC)).date()
        months = {month_of(today - timedelta(days=days)) for days in range(0, 400, 28)}
        months.add(month_of(today + timedelta(days=1)))
        names = [self.key(key_id, part) for part in ("limits", "credits", "inflight", "held")]
        await self._redis.delete(*names, *(self.month_key(key_id, month) for month in sorted(months)))

    async def _run(
        self, key_id: str, job_id: str, now: datetime | None, cost: int, concurrency: bool, *, look: bool
    ) -> bool:
        moment = now or datetime.now(UTC)
        today = moment.date()
        keys = [
            self.key(key_id, "limits"),
            self.key(key_id, "credits"),
            self.key(key_id, "inflight"),
            self.key(key_id, "held"),
            self.month_key(key_id, month_of(today)),
            usage_day_key(self._prefix, key_id, today),
            self.reserved_key(job_id),
        ]
        stamp = moment.timestamp()
        args: list[str | int | float] = [
            job_id,
            repr(stamp),
            cost,
            f"{today.isoformat()} {month_of(today)}",
            USAGE_TTL_SECONDS,
            MONTH_TTL_SECONDS,
            repr(stamp - STALE_RESERVATION_SECONDS),
            "look" if look else "reserve",
            "1" if concurrency else "0",
            STALE_RESERVATION_SECONDS,
        ]
        reply = await self._reserve(keys=keys, args=args)
        verdict, value = int(reply[0]), int(reply[1])
        if verdict == 1:
            raise InsufficientCreditsError(
                f"this API key has {max(value, 0)} credit(s) left and the job needs {cost}; add credits"
            )
        if verdict == 2:
            raise QuotaExceededError(
                f"this API key's daily limit of {value} submissions is reached; it resets at 00:00 UTC",
                limit="daily",
                retry_after=seconds_to_next_day(moment),
            )
        if verdict == 3:
            raise QuotaExceededError(
                f"this API key's monthly limit of {value} submissions is reached; it resets on the 1st (UTC)",
                limit="monthly",
                retry_after=seconds_to_next_month(moment),
            )
        if verdict == 4:
            raise QuotaExceededError(
                f"this API key may have {value} job(s) queued or running at once; try again when one ends",
                limit="concurrent",
                retry_after=CONCURRENT_RETRY_AFTER_SECONDS,
            )
        return value == 1
