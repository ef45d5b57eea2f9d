"""Job records in Redis: what clients poll. Written by the gateway (queued) and the worker (the rest).

Writing a finished record also publishes the job id on :func:`finished_channel` (in the same round trip),
so a gateway holding requests open for their jobs (``wait``) learns of it without polling every record.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.jobs import JobRecord

# Records outlive their results by a day so a late poll still explains what happened.
RECORD_TTL_SECONDS = 2 * 24 * 3600

# KEYS: counted marker, usage hash; ARGV: TTL. Marker and count in one atomic step (one round trip).
_COUNT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('HINCRBY', KEYS[2], 'images', 1)
    return 1
end
return 0
"""


def finished_channel(prefix: str) -> str:
    """Pub/sub channel carrying the ids of jobs whose record was just written in a final state."""
    return f"{prefix}:jobs:finished"


class JobStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._channel = finished_channel(prefix)

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def stage_put(self, pipe: Pipeline, record: JobRecord, *, count_success: bool = False) -> None:
        """Add writing ``record`` to ``pipe`` (with its announcement when final). ``count_success`` also
        counts the job in its owner's usage, exactly once however often it is re-run."""
        pipe.set(self._key(record.id), record.model_dump_json(by_alias=True), ex=RECORD_TTL_SECONDS)
        if record.status.finished:
            pipe.publish(self._channel, record.id)
        if count_success:
            # EVAL, not EVALSHA: a pipeline would ask SCRIPT EXISTS first, one more round trip each time.
            keys = [f"{self._prefix}:counted:{record.id}", f"{self._prefix}:usage:{record.owner}"]
            pipe.eval(_COUNT_ONCE, len(keys), *keys, str(RECORD_TTL_SECONDS))

    async def put(self, record: JobRecord, *, count_success: bool = False) -> None:
        """Write ``record`` in one round trip; see :meth:`stage_put`."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.stage_put(pipe, record, count_success=count_success)
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self._redis.get(self._key(job_id))
        if raw is None:
            return None
        return JobRecord.model_validate_json(raw)

    async def delete(self, job_id: str) -> None:
        """Forget a record (the gateway's clean-up when a job could not be queued)."""
        await self._redis.delete(self._key(job_id))

    async def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        records: list[JobRecord | None] = []
        for start in range(0, len(job_ids), 500):
            raws = await self._redis.mget([self._key(job_id) for job_id in job_ids[start : start + 500]])
            records.extend(None if raw is None else JobRecord.model_validate_json(raw) for raw in raws)
        return records

    async def put_if_absent(self, record: JobRecord) -> bool:
        """Write a new record unless one exists (a re-run must never reset a finished job)."""
        written = await self._redis.set(
            self._key(record.id), record.model_dump_json(by_alias=True), ex=RECORD_TTL_SECONDS, nx=True
        )
        return bool(written)
