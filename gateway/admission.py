"""Admission: whether a new job may enter the queue, checked before its image is checked or stored.

Two limits, both in Redis so that every gateway process shares them, and both in one round trip:

* the queue's depth (``max_queued_jobs``): a flood of uploads waits at the client, not in Redis and the
  store — 503 ``QUEUE_FULL`` with ``Retry-After``;
* a rate per API key (``submissions_per_second`` with a ``submission_burst``), as a generic cell rate
  algorithm: one timestamp per key, no counters to reset — 429 ``RATE_LIMITED`` with ``Retry-After``.

A key's credits and quotas are checked beside these by the submitter (``JobSubmitter.admit``), and charged
when the job is queued (``shared/quotas.py``: one script, all the checks and the charge).
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.backends import redis_errors
from shared.errors import QueueFullError, RateLimitedError
from shared.settings import Settings

# KEYS: the key's rate state, the arq queue. ARGV: ms between submissions (0: no rate limit), burst
# tolerance in ms, queue limit (0: none), 1 to count this submission (0: only look). Returns {0, 0} when
# admitted, {1, 0} when the queue is full, {2, ms to wait} when the key is over its rate. Redis's own
# clock: gateways may disagree on the time.
_ADMIT = """
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then
    return {1, 0}
end
local interval = tonumber(ARGV[1])
if interval <= 0 then
    return {0, 0}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
    tat = now
end
local wait = tat - now - tonumber(ARGV[2])
if wait > 0 then
    return {2, wait}
end
if ARGV[4] == '1' then
    redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now) + 1000)
end
return {0, 0}
"""

QUEUE_RETRY_AFTER_SECONDS = 5.0


class Admission:
    """Checks one submission against the queue's depth and its key's rate (see the module's text)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        gateway = settings.gateway
        self._prefix = settings.redis.prefix
        self._queue = settings.redis.queue_name
        self._max_queued = settings.redis.max_queued_jobs
        rate = gateway.submissions_per_second
        self._interval_ms = 1000.0 / rate if rate > 0 else 0.0
        self._tolerance_ms = self._interval_ms * (gateway.submission_burst - 1)
        self._rate = rate
        self._admit = redis.register_script(_ADMIT)

    @property
    def limited(self) -> bool:
        return self._max_queued > 0 or self._interval_ms > 0

    async def admit(self, owner: str, *, count: bool = True) -> None:
        """Return when ``owner`` (an API key id) may queue one more job; raise 503 or 429 otherwise.

        ``count=False`` only looks, without using up the key's rate: for a check before work that comes
        ahead of the submission itself (fetching an ``image_url``)."""
        if not self.limited:
            return
        with redis_errors("checking the queue's limits"):
            verdict, wait_ms = await self._admit(
                keys=[f"{self._prefix}:rate:{owner}", self._queue],
                args=[self._interval_ms, self._tolerance_ms, self._max_queued, 1 if count else 0],
            )
        if int(verdict) == 1:
            raise QueueFullError(
                f"the queue is full ({self._max_queued} jobs); try again later",
                retry_after=QUEUE_RETRY_AFTER_SECONDS,
            )
        if int(verdict) == 2:
            wait = max(0.001, int(wait_ms) / 1000)
            raise RateLimitedError(
                f"this API key may submit {self._rate:g} jobs per second; try again in {wait:.2f} s",
                retry_after=wait,
            )
