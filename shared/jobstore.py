"""Job records in Redis: what clients poll. Written by the gateway (queued) and the worker (the rest).

Writing a finished record also publishes the job id on :func:`finished_channel` (in the same round trip),
so a gateway holding requests open for their jobs (``wait``) learns of it without polling every record.

The worker's writes are conditional (:meth:`JobStore.start`, :meth:`JobStore.finish`): a finished record
is never written again, so a late, retried or duplicate run cannot flip a job the sweeper already failed.
Besides the records, three keys let the sweeper (``workers/sweeper.py``) end what no worker will:

* ``<prefix>:jobs:deadlines`` — a sorted set of the jobs a worker started (or handed back to arq for a
  retry), scored by when the sweeper should look at them (Unix time); removed when the job ends.
* ``<prefix>:jobs:running`` — a hash of the same jobs: what the sweeper needs to end one
  (:class:`RunningJob`: its original, its bulk copy, its webhook), which the record does not hold.
* ``<prefix>:deletions`` — a sorted set of objects (``bucket/key``) to delete, scored by when: a job's
  original once it ended and a failed job's results, added with the final record in one step, removed
  once deleted (by the worker at once, or by the sweeper when the store could not be reached).

The final write also settles the job with its owner's account, once (a marker per job): its quota
reservation is released, a failed job's credit refunded (``shared/quotas.py``) and the day's usage counted
(``shared/usage.py``). ``<prefix>:jobs:owner:<owner>`` indexes each owner's job ids (for exporting or
erasing a key's data), as long as their records may live.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.jobs import JobRecord, JobStatus, ObjectRef, utcnow
from shared.quotas import quota_key
from shared.usage import USAGE_TTL_SECONDS, usage_day_key

# Records outlive their results by a day so a late poll still explains what happened.
RECORD_TTL_SECONDS = 2 * 24 * 3600
# An owner's index keeps a job id this long after its last record write (the record's TTL, and a margin).
OWNER_INDEX_SECONDS = RECORD_TTL_SECONDS + 24 * 3600
CREDITS_PER_IMAGE = 1

# KEYS: counted marker, usage hash; ARGV: TTL. Marker and count in one atomic step (one round trip).
_COUNT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('HINCRBY', KEYS[2], 'images', 1)
    return 1
end
return 0
"""


# A record whose status is final is left alone. KEYS: record, deadlines, running.
# ARGV: record JSON, TTL, job id, deadline, RunningJob JSON ('' for none). Returns the final status or 'ok'.
_START = """
local raw = redis.call('GET', KEYS[1])
if raw then
    local status = cjson.decode(raw)['status']
    if status == 'succeeded' or status == 'failed' then
        return status
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
end
return 'ok'
"""

# The final record, unless one is there already: out of the sweeper's index, its deletions queued, announced,
# counted once, and accounted to its owner once (the quota reservation released, a failed job's credits
# refunded: shared/quotas.py; the day's usage: shared/usage.py). KEYS: record, deadlines, running,
# deletions, counted marker, usage hash, in-flight set, held reservations, credits, usage day, accounted
# marker, owner index.
# ARGV: record JSON, TTL, job id, channel, count ('1'/'0'), due, sweep ('1'/'0'), now, outcome ('succeeded'/
# 'failed'), pixels, credits, usage TTL, n, then n (class, count) pairs, then the objects to delete. With
# sweep = '1' (the sweeper failing a job) it also leaves a job whose deadline a run just moved on.
# Returns 'ok', the final status found, or 'alive'.
_FINISH = """
local raw = redis.call('GET', KEYS[1])
if raw then
    local status = cjson.decode(raw)['status']
    if status == 'succeeded' or status == 'failed' then
        return status
    end
end
if ARGV[7] == '1' then
    local deadline = redis.call('ZSCORE', KEYS[2], ARGV[3])
    if deadline and tonumber(deadline) > tonumber(ARGV[8]) then
        return 'alive'
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
local pairs_end = 13 + 2 * tonumber(ARGV[13])
for i = pairs_end + 1, #ARGV do
    redis.call('ZADD', KEYS[4], ARGV[6], ARGV[i])
end
redis.call('PUBLISH', ARGV[4], ARGV[3])
if ARGV[5] == '1' and redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('HINCRBY', KEYS[6], 'images', 1)
end
redis.call('ZADD', KEYS[12], ARGV[8], ARGV[3])
redis.call('EXPIRE', KEYS[12], ARGV[2])
local held = redis.call('HGET', KEYS[8], ARGV[3])
if held then
    redis.call('HDEL', KEYS[8], ARGV[3])
    local charged = tonumber(string.match(held, '^(%d+)'))
    if ARGV[9] == 'failed' and charged > 0 and redis.call('EXISTS', KEYS[9]) == 1 then
        redis.call('INCRBY', KEYS[9], charged)
    end
end
redis.call('ZREM', KEYS[7], ARGV[3])
if redis.call('SET', KEYS[11], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('HINCRBY', KEYS[10], ARGV[9], 1)
    if ARGV[10] ~= '0' then
        redis.call('HINCRBY', KEYS[10], 'pixels', ARGV[10])
    end
    if ARGV[11] ~= '0' then
        redis.call('HINCRBY', KEYS[10], 'credits', ARGV[11])
    end
    for i = 14, pairs_end, 2 do
        redis.call('HINCRBY', KEYS[10], 'det:' .. ARGV[i], ARGV[i + 1])
    end
    redis.call('EXPIRE', KEYS[10], ARGV[12])
end
return 'ok'
"""


class RunningJob(BaseModel):
    """What ending a job needs beyond its record, kept while it runs (the arq payload is gone by then)."""

    original: ObjectRef | None = None  # deleted when the job ends (None: not Veil's to delete)
    output: ObjectRef | None = None  # a bulk job's blurred copy outside Veil's results
    callback_url: str | None = None


def object_member(ref: ObjectRef) -> str:
    """``bucket/key``: bucket names hold no ``/``, so the first one splits it back."""
    return f"{ref.bucket}/{ref.key}"


def member_object(member: str | bytes) -> ObjectRef:
    text = member.decode() if isinstance(member, bytes) else member
    bucket, key = text.split("/", 1)
    return ObjectRef(bucket=bucket, key=key)


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def finished_channel(prefix: str) -> str:
    """Pub/sub channel carrying the ids of jobs whose record was just written in a final state."""
    return f"{prefix}:jobs:finished"


class JobStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._channel = finished_channel(prefix)
        self.deadlines_key = f"{prefix}:jobs:deadlines"
        self.running_key = f"{prefix}:jobs:running"
        self.deletions_key = f"{prefix}:deletions"
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def stage_put(self, pipe: Pipeline, record: JobRecord, *, count_success: bool = False) -> None:
        """Add writing ``record`` to ``pipe`` (with its announcement when final). ``count_success`` also
        counts the job in its owner's usage, exactly once however often it is re-run."""
        pipe.set(self._key(record.id), record.model_dump_json(by_alias=True), ex=RECORD_TTL_SECONDS)
        self._stage_index(pipe, record)
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
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(
                self._key(record.id), record.model_dump_json(by_alias=True), ex=RECORD_TTL_SECONDS, nx=True
            )
            self._stage_index(pipe, record)
            written, *_ = await pipe.execute()
        return bool(written)

    # -- each owner's jobs (for exporting or erasing a key's data) ------------------------------------------

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}:jobs:owner:{owner}"

    def _stage_index(self, pipe: Pipeline, record: JobRecord) -> None:
        """Index the job under its owner (scored by now; entries older than a record's life dropped)."""
        key, now = self._owner_key(record.owner), time.time()
        pipe.zadd(key, {record.id: now})
        pipe.zremrangebyscore(key, "-inf", repr(now - OWNER_INDEX_SECONDS))
        pipe.expire(key, OWNER_INDEX_SECONDS)

    async def ids_of_owner(self, owner: str) -> list[str]:
        """Ids of ``owner``'s jobs whose records may still exist, oldest first."""
        cutoff = time.time() - OWNER_INDEX_SECONDS
        ids = await self._redis.zrangebyscore(self._owner_key(owner), repr(cutoff), "+inf")
        return [_text(job_id) for job_id in ids]

    async def forget_owner(self, owner: str) -> None:
        """Drop ``owner``'s index (its records and objects are the caller's to delete)."""
        await self._redis.delete(self._owner_key(owner))

    # -- the worker's writes, and what the sweeper needs ------------------------------------------------

    async def start(
        self, record: JobRecord, *, deadline: float, running: RunningJob | None = None
    ) -> JobStatus | None:
        """Write a running (or, handed back to arq, queued) record and index it for the sweeper until
        ``deadline`` (Unix time), unless the job is finished: then nothing is written and its final status
        is returned."""
        assert not record.status.finished
        reply = await self._start(
            keys=[self._key(record.id), self.deadlines_key, self.running_key],
            args=[
                record.model_dump_json(by_alias=True),
                RECORD_TTL_SECONDS,
                record.id,
                repr(deadline),
                running.model_dump_json() if running is not None else "",
            ],
        )
        outcome = _text(reply)
        return None if outcome == "ok" else JobStatus(outcome)

    async def finish(
        self,
        record: JobRecord,
        *,
        count_success: bool = False,
        delete: Sequence[ObjectRef] = (),
        due: float = 0.0,
    ) -> JobStatus | None:
        """Write the final ``record`` unless the job is finished already (then its final status is returned
        and nothing is written); in the same step take it out of the sweeper's index, queue ``delete`` for
        deletion at ``due`` (Unix time; :meth:`deleted` takes them off once gone), announce it and, with
        ``count_success``, count it in its owner's usage once however often it is re-run."""
        outcome = await self._final(record, count_success, delete, due, sweep=None)
        return None if outcome == "ok" else JobStatus(outcome)

    async def fail_abandoned(self, record: JobRecord, *, now: float, delete: Sequence[ObjectRef] = ()) -> str:
        """The sweeper's :meth:`finish` of a failed ``record``, only if the job is still past its deadline
        at ``now`` (whether arq still holds the job, the sweeper asks arq first: ``arq.jobs.Job.status``).
        Returns ``ok`` (failed now), ``alive`` (a run moved its deadline on) or the final status it had
        already."""
        return await self._final(record, False, delete, now, sweep=now)

    async def postpone(self, job_id: str, at: float) -> None:
        """Move a started job's deadline to ``at`` (Unix time), if it is still in the sweeper's index (a job
        that ended meanwhile is not put back)."""
        await self._redis.zadd(self.deadlines_key, {job_id: at}, xx=True)

    async def _final(
        self,
        record: JobRecord,
        count_success: bool,
        delete: Sequence[ObjectRef],
        due: float,
        sweep: float | None,
    ) -> str:
        assert record.status.finished
        owner, prefix = record.owner, self._prefix
        succeeded = record.status is JobStatus.SUCCEEDED
        day = (record.finished_at or utcnow()).date()
        keys = [
            self._key(record.id),
            self.deadlines_key,
            self.running_key,
            self.deletions_key,
            f"{prefix}:counted:{record.id}",
            f"{prefix}:usage:{owner}",
            quota_key(prefix, owner, "inflight"),
            quota_key(prefix, owner, "held"),
            quota_key(prefix, owner, "credits"),
            usage_day_key(prefix, owner, day),
            f"{prefix}:accounted:{record.id}",
            self._owner_key(owner),
        ]
        pixels = record.input.width * record.input.height if succeeded and record.input else 0
        classes = Counter(det.class_ for det in record.detections) if succeeded else Counter[str]()
        args = [
            record.model_dump_json(by_alias=True),
            RECORD_TTL_SECONDS,
            record.id,
            self._channel,
            "1" if count_success else "0",
            repr(due),
            "1" if sweep is not None else "0",
            repr(sweep if sweep is not None else time.time()),
            record.status.value,
            pixels,
            CREDITS_PER_IMAGE if succeeded else 0,
            USAGE_TTL_SECONDS,
            len(classes),
            *(item for pair in sorted(classes.items()) for item in pair),
            *dict.fromkeys(object_member(ref) for ref in delete),
        ]
        return _text(await self._finish(keys=keys, args=args))

    async def overdue(self, now: float, limit: int = 500) -> list[str]:
        """Ids of started jobs whose deadline is past at ``now``, oldest first."""
        ids = await self._redis.zrangebyscore(self.deadlines_key, "-inf", repr(now), start=0, num=limit)
        return [_text(job_id) for job_id in ids]

    async def running(self, job_id: str) -> RunningJob | None:
        raw = await self._redis.hget(self.running_key, job_id)  # type: ignore[misc]
        return None if raw is None else RunningJob.model_validate_json(raw)

    async def forget(self, job_id: str) -> None:
        """Take a job out of the sweeper's index (it ended, or its record is gone)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.deadlines_key, job_id)
            pipe.hdel(self.running_key, job_id)
            await pipe.execute()

    async def due_deletions(self, now: float, limit: int = 500) -> list[ObjectRef]:
        members = await self._redis.zrangebyscore(self.deletions_key, "-inf", repr(now), start=0, num=limit)
        return [member_object(member) for member in members]

    async def delete_later(self, refs: Sequence[ObjectRef], due: float) -> None:
        """(Re)schedule deletions at ``due`` (Unix time)."""
        if refs:
            await self._redis.zadd(self.deletions_key, {object_member(ref): due for ref in refs})

    async def deleted(self, refs: Sequence[ObjectRef]) -> None:
        if refs:
            await self._redis.zrem(self.deletions_key, *[object_member(ref) for ref in refs])
