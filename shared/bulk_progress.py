"""A bulk job's progress as counters beside its record, so reading it never loads every child.

Per bulk job (all expiring with its record):

* ``…:ended`` — a set of the children that ended; adding a child twice counts it once, so every path that
  ends a child (the task, a re-run of it, the listing, the gateway's check of the running ones) may report
  it without counting it twice;
* ``…:running`` — a set of the children started and not yet ended;
* ``…:progress`` — a hash: ``succeeded`` / ``failed`` / ``cancelled`` counts and when the first child
  started (ms);
* ``…:cancelled`` / ``…:finished`` — when the owner cancelled it / when it finished: each set once (SET NX),
  which makes ``bulk.finished`` go out once however many paths see the last child end.

A started child also names its bulk job (``<prefix>:bulk-child:<job id>``), for code that ends a job
without its payload at hand (the sweeper).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.jobs import JobRecord, JobStatus
from shared.jobstore import RECORD_TTL_SECONDS
from shared.redisutil import resolve

CANCELLED_CODE = "CANCELLED"
OUTCOMES = ("succeeded", "failed", "cancelled")

# KEYS: bulk record, ended, running, progress, child's bulk. ARGV: child id, now (ms), TTL, bulk id.
# A child of a bulk job that is gone, or that ended already (a late duplicate run), is not counted.
_STARTED = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
    return 0
end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('HSETNX', KEYS[4], 'first_started_ms', ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[3])
redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[3])
return 1
"""

# KEYS: bulk record, ended, running, progress. ARGV: child id, outcome, TTL.
# Returns 1 when this call counted the child, 0 when it was counted before (or its bulk job is gone).
_ENDED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then
    return 0
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
"""


def outcome_of(record: JobRecord) -> str:
    """How a finished child counts: ``succeeded``, ``cancelled`` (failed ``CANCELLED``) or ``failed``."""
    if record.status is JobStatus.SUCCEEDED:
        return "succeeded"
    if record.error is not None and record.error.code == CANCELLED_CODE:
        return "cancelled"
    return "failed"


def _int(value: object) -> int | None:
    if value is None:
        return None
    return int(value.decode() if isinstance(value, bytes) else str(value))


def _when(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(frozen=True)
class Counters:
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    first_started_ms: int | None = None
    cancelled_ms: int | None = None
    finished_ms: int | None = None

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def cancelled_at(self) -> datetime | None:
        return _when(self.cancelled_ms)

    @property
    def finished_at(self) -> datetime | None:
        return _when(self.finished_ms)


class BulkProgress(BaseModel):
    """Where a bulk job stands, from its counters."""

    total: int = Field(description="Images listed so far (all of them once listing is over).")
    queued: int = Field(description="Not started yet (once cancelled: about to be cancelled).")
    running: int = Field(description="Started and not ended (a child waiting for its retry included).")
    succeeded: int
    failed: int = Field(description="Failed, cancelled children not included.")
    cancelled: int = Field(description="Never started: the bulk job was cancelled first.")
    rate_per_second: float | None = Field(
        description="Children that succeeded or failed per second since the first one started; null before"
        " one ended."
    )
    eta_seconds: int | None = Field(
        description="Seconds until the children not ended yet would end at that rate (of those listed so"
        " far); 0 once finished; null while there is no rate."
    )


def progress(total: int, counters: Counters, *, done: bool, now_ms: int | None = None) -> BulkProgress:
    """The progress of a bulk job of ``total`` children; ``done``: listing is over and every child ended."""
    running = counters.running
    queued = max(0, total - counters.ended - running)
    processed = counters.succeeded + counters.failed
    until = counters.finished_ms or (int(time.time() * 1000) if now_ms is None else now_ms)
    rate = None
    if counters.first_started_ms is not None and processed and until > counters.first_started_ms:
        rate = round(processed / ((until - counters.first_started_ms) / 1000), 3)
    remaining = running + (0 if counters.cancelled_ms is not None else queued)
    eta = 0 if done else (round(remaining / rate) if rate else None)
    return BulkProgress(
        total=total,
        queued=queued,
        running=running,
        succeeded=counters.succeeded,
        failed=counters.failed,
        cancelled=counters.cancelled,
        rate_per_second=rate,
        eta_seconds=eta,
    )


class ProgressStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._started = redis.register_script(_STARTED)
        self._ended = redis.register_script(_ENDED)

    def _key(self, bulk_id: str, part: str = "") -> str:
        return f"{self._prefix}:bulk:{bulk_id}{part}"

    def _child_key(self, job_id: str) -> str:
        return f"{self._prefix}:bulk-child:{job_id}"

    async def started(self, bulk_id: str, job_id: str) -> None:
        keys = [self._key(bulk_id, p) for p in ("", ":ended", ":running", ":progress")]
        now = int(time.time() * 1000)
        await self._started(
            keys=[*keys, self._child_key(job_id)], args=[job_id, now, RECORD_TTL_SECONDS, bulk_id]
        )

    async def ended(self, bulk_id: str, job_id: str, outcome: str) -> bool:
        """Count ``job_id`` as ended with ``outcome`` (one of :data:`OUTCOMES`), once; True if this did."""
        assert outcome in OUTCOMES
        keys = [self._key(bulk_id, p) for p in ("", ":ended", ":running", ":progress")]
        return bool(await self._ended(keys=keys, args=[job_id, outcome, RECORD_TTL_SECONDS]))

    async def bulk_of(self, job_id: str) -> str | None:
        """The bulk job a started child belongs to."""
        raw = await self._redis.get(self._child_key(job_id))
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def running_children(self, bulk_id: str) -> list[str]:
        members = await resolve(self._redis.smembers(self._key(bulk_id, ":running")))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def counters(self, bulk_id: str) -> Counters:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key(bulk_id, ":progress"))
            pipe.scard(self._key(bulk_id, ":running"))
            pipe.get(self._key(bulk_id, ":cancelled"))
            pipe.get(self._key(bulk_id, ":finished"))
            fields, running, cancelled, finished = await pipe.execute()
        named = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        return Counters(
            succeeded=_int(named.get("succeeded")) or 0,
            failed=_int(named.get("failed")) or 0,
            cancelled=_int(named.get("cancelled")) or 0,
            running=int(running),
            first_started_ms=_int(named.get("first_started_ms")),
            cancelled_ms=_int(cancelled),
            finished_ms=_int(finished),
        )

    async def _mark(self, bulk_id: str, part: str) -> bool:
        now = int(time.time() * 1000)
        return bool(await self._redis.set(self._key(bulk_id, part), now, nx=True, ex=RECORD_TTL_SECONDS))

    async def cancel(self, bulk_id: str) -> bool:
        """Mark the bulk job cancelled; False if it was already."""
        return await self._mark(bulk_id, ":cancelled")

    async def is_cancelled(self, bulk_id: str) -> bool:
        return bool(await self._redis.exists(self._key(bulk_id, ":cancelled")))

    async def claim_finished(self, bulk_id: str) -> bool:
        """Mark the bulk job finished: True for the one caller that did (it sends ``bulk.finished``)."""
        return await self._mark(bulk_id, ":finished")
