"""Bulk jobs: blur every image under a prefix of a bucket, each as an ordinary job.

The gateway records the bulk job and queues ``expand_bulk``; a worker lists the objects and queues one
child job per image (ids derived from the bulk id and the key, so a re-run after a crash queues nothing
twice). Progress is counted as children start and end (:mod:`shared.bulk_progress`); when listing is over
and the last child ended, ``bulk.finished`` is sent once to the bulk job's ``callback_url``
(:func:`finish_if_done`). A cancelled bulk job lists no further, and its children that had not started
end ``CANCELLED`` without running (workers/tasks.py); those that had started finish.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.bulk_progress import Counters, ProgressStore, outcome_of, progress
from shared.deliveries import enqueue_delivery
from shared.jobs import BlurOptions, JobRecord, utcnow
from shared.jobstore import RECORD_TTL_SECONDS, JobStore
from shared.redisutil import resolve

EXPAND_FUNCTION = "expand_bulk"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")  # listed only where video jobs are on
MAX_OBJECTS = 100_000
# Objects listed per expand_bulk run: each run stays well inside the worker's job timeout, and the next
# page is queued as its own job.
PAGE_SIZE = 1000


class BulkStatus(StrEnum):
    LISTING = "listing"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # listing failed (the children queued before still run)
    CANCELLING = "cancelling"  # cancelled; children that had started are finishing
    CANCELLED = "cancelled"


# What clients never see of a bulk record.
PRIVATE_FIELDS = frozenset({"owner", "options", "limit", "cursor", "page", "listed"})
BULK_FINISHED = "bulk.finished"


class BulkSource(BaseModel):
    bucket: str
    prefix: str = ""


class BulkOutput(BaseModel):
    bucket: str
    prefix: str = ""


class BulkRecord(BaseModel):
    id: str
    owner: str
    status: BulkStatus = BulkStatus.LISTING
    source: BulkSource
    output: BulkOutput | None = None
    options: BlurOptions = Field(default_factory=BlurOptions)
    callback_url: str | None = None
    limit: int = MAX_OBJECTS
    total: int = 0
    skipped: int = 0
    truncated: bool = False
    listed: int = 0  # objects seen so far
    cursor: str | None = None  # last key listed; the next page starts after it
    page: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    error: str | None = None


def child_job_id(bulk_id: str, key: str) -> str:
    return hashlib.sha256(f"{bulk_id}\0{key}".encode()).hexdigest()[:32]


def output_key(output: BulkOutput, source: BulkSource, key: str) -> str:
    """Where a blurred copy lands: the key's path below the source prefix, under the output prefix."""
    relative = key[len(source.prefix) :] if key.startswith(source.prefix) else key
    return f"{output.prefix}{relative}"


def is_image_key(key: str, *, videos: bool = False) -> bool:
    """A key a bulk job (or the watched prefix) takes: a photo's suffix, or with ``videos`` a video's."""
    return key.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES if videos else IMAGE_SUFFIXES)


class BulkStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.jobs = JobStore(redis, prefix)
        self.progress = ProgressStore(redis, prefix)

    def _key(self, bulk_id: str) -> str:
        return f"{self._prefix}:bulk:{bulk_id}"

    async def put(self, record: BulkRecord) -> None:
        await self._redis.set(self._key(record.id), record.model_dump_json(), ex=RECORD_TTL_SECONDS)

    async def get(self, bulk_id: str) -> BulkRecord | None:
        raw = await self._redis.get(self._key(bulk_id))
        return None if raw is None else BulkRecord.model_validate_json(raw)

    async def add_children(self, bulk_id: str, entries: list[tuple[str, str]]) -> None:
        """Remember (job id, source key) pairs; a hash, so a re-run of the listing adds nothing twice."""
        if not entries:
            return
        key = f"{self._key(bulk_id)}:jobs"
        await resolve(self._redis.hset(key, mapping={job_id: source for job_id, source in entries}))
        await self._redis.expire(key, RECORD_TTL_SECONDS)

    async def children(self, bulk_id: str) -> list[tuple[str, str]]:
        raw = await resolve(self._redis.hgetall(f"{self._key(bulk_id)}:jobs"))
        pairs = [
            (k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        ]
        return sorted(pairs, key=lambda pair: pair[1])


def is_done(record: BulkRecord, counters: Counters) -> bool:
    """Listing is over and every child listed has ended."""
    return record.status is not BulkStatus.LISTING and counters.ended >= record.total


def view_status(record: BulkRecord, counters: Counters) -> BulkStatus:
    done = is_done(record, counters)
    if counters.cancelled_ms is not None:
        return BulkStatus.CANCELLED if done else BulkStatus.CANCELLING
    if record.status is BulkStatus.RUNNING and done:
        return BulkStatus.FINISHED
    return record.status


def summary(record: BulkRecord, counters: Counters) -> dict[str, Any]:
    """The bulk job as its owner sees it, without its children: ``GET /v1/bulk/<id>`` and the body of
    ``bulk.finished``."""
    state = progress(record.total, counters, done=is_done(record, counters))
    counts = state.model_dump(include={"queued", "running", "succeeded", "failed", "cancelled"})
    return {
        **record.model_dump(mode="json", exclude=set(PRIVATE_FIELDS)),
        "status": view_status(record, counters).value,
        "cancelled_at": counters.cancelled_at,
        "finished_at": counters.finished_at,
        "counts": counts,
        "progress": state.model_dump(),
    }


async def finish_if_done(bulks: BulkStore, pool: ArqRedis, queue_name: str, bulk_id: str) -> bool:
    """If the bulk job is done, mark it finished and queue its ``bulk.finished`` webhook; only the first
    caller that finds it done does (True). Called wherever its last child may end, and when listing ends."""
    record = await bulks.get(bulk_id)
    if record is None or not is_done(record, await bulks.progress.counters(bulk_id)):
        return False
    if not await bulks.progress.claim_finished(bulk_id):
        return False
    if record.callback_url:
        await enqueue_delivery(pool, bulk_id, record.callback_url, queue_name, kind="bulk")
    return True


async def child_ended(
    bulks: BulkStore, pool: ArqRedis, queue_name: str, bulk_id: str, record: JobRecord
) -> None:
    """Count a finished child (once, however often reported) and finish the bulk job if it was the last."""
    await bulks.progress.ended(bulk_id, record.id, outcome_of(record))
    await finish_if_done(bulks, pool, queue_name, bulk_id)


async def reconcile(bulks: BulkStore, pool: ArqRedis, queue_name: str, bulk_id: str) -> Counters:
    """Count the started children that ended without being counted (failed by the sweeper, or their worker
    died right after recording the end), finish the bulk job if that was all, and return its counters."""
    running = await bulks.progress.running_children(bulk_id)
    for child in await bulks.jobs.get_many(running):
        if child is not None and child.status.finished:
            await bulks.progress.ended(bulk_id, child.id, outcome_of(child))
    counters = await bulks.progress.counters(bulk_id)
    if counters.finished_ms is None and await finish_if_done(bulks, pool, queue_name, bulk_id):
        counters = await bulks.progress.counters(bulk_id)
    return counters
