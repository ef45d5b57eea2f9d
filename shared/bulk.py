"""Bulk jobs: blur every image under a prefix of a bucket, each as an ordinary job.

The gateway records the bulk job and queues ``expand_bulk``; a worker lists the objects and queues one
child job per image (ids derived from the bulk id and the key, so a re-run after a crash queues nothing
twice). Progress is read from the children's records.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.jobs import BlurOptions, JobRecord, JobStatus, utcnow
from shared.jobstore import RECORD_TTL_SECONDS, JobStore
from shared.redisutil import resolve

EXPAND_FUNCTION = "expand_bulk"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_OBJECTS = 100_000
# Objects listed per expand_bulk run: each run stays well inside the worker's job timeout, and the next
# page is queued as its own job.
PAGE_SIZE = 1000


class BulkStatus(StrEnum):
    LISTING = "listing"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


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


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


class BulkStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self.jobs = JobStore(redis, prefix)

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


def summarise(record: BulkRecord, children: list[JobRecord | None]) -> tuple[BulkStatus, dict[str, int]]:
    counts = {status.value: 0 for status in JobStatus}
    for child in children:
        counts[(child.status if child else JobStatus.QUEUED).value] += 1
    status = record.status
    if status is BulkStatus.RUNNING and counts["succeeded"] + counts["failed"] == record.total:
        status = BulkStatus.FINISHED
    return status, counts
