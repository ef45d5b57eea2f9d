"""A watched prefix: what it may touch, how an object is named, and what Redis remembers of it.

Every object (one version: key, ETag, last-modified) gets one job id, derived from those, so the same
object is never queued twice and a job's record tells whether it was blurred. Once its job ended the
poller (``workers/watch.py``) writes the object's *done entry*: one string key per source key, holding the
job id (so a new upload under the same key is new work), the outcome and whether the ``after`` action
(tag, delete) was applied. Counters per outcome go up once per object, in the same step.

Keys (``<prefix>:watch:<location hash>:...``, so another source starts afresh): ``done:<key hash>``,
``cursor`` (the last key a poll listed; the next one resumes after it), ``stats`` (a hash of counters),
``failed`` (a sorted set of source keys that failed, by time) and ``lock`` (one poller at a time).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from redis.asyncio import Redis

from shared.errors import ValidationError
from shared.objectkeys import check_prefix, folders_overlap, is_folder
from shared.settings import S3Location, Settings, WatchSettings

# A source deleted after processing needs its entry only while a listing might still show it.
DELETED_ENTRY_TTL_SECONDS = 7 * 24 * 3600
TAG_KEY = "veil-status"


class WatchConfigError(ValueError):
    """VEIL_WATCH__* names something the watcher must not touch; raised at the worker's start-up."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not an image by its name: never read


class DoneEntry(BaseModel):
    job_id: str
    outcome: Outcome
    applied: bool = False  # the `after` action (tag, delete) is done


def check_watch(settings: Settings) -> WatchSettings:
    """``settings.watch`` if it is safe to run, else :class:`WatchConfigError` saying why: canonical
    folder prefixes, the output in a writable bucket, never Veil's own bucket, and copies that cannot land
    on (or be listed as) sources."""
    watch, s3 = settings.watch, settings.s3
    source, output = watch.source, watch.output
    if source is None or output is None:
        return watch
    for name, location in (("SOURCE", source), ("OUTPUT", output)):
        field = f"VEIL_WATCH__{name}"
        try:
            check_prefix(location.prefix, field)
        except ValidationError as exc:
            raise WatchConfigError(exc.message) from None
        if not is_folder(location.prefix):
            raise WatchConfigError(f"{field} must name a folder: its prefix must be empty or end with '/'")
        if location.bucket == s3.bucket:
            raise WatchConfigError(f"{field}: Veil's own bucket {s3.bucket!r} is never watched nor written")
    if output.bucket not in s3.writable_buckets:
        raise WatchConfigError(
            f"VEIL_WATCH__OUTPUT: bucket {output.bucket!r} is not writable by Veil"
            " (VEIL_S3__WRITABLE_BUCKETS)"
        )
    if folders_overlap(output.bucket, output.prefix, source.bucket, source.prefix):
        raise WatchConfigError(
            "VEIL_WATCH__OUTPUT must not overlap VEIL_WATCH__SOURCE: use another bucket, or a folder that"
            " neither lies inside the watched one nor contains it"
        )
    return watch


def object_job_id(bucket: str, key: str, etag: str, last_modified: datetime) -> str:
    """One job per object version: the same object always maps here, a new upload (even of the same
    bytes) elsewhere."""
    version = f"{bucket}\0{key}\0{etag.strip(chr(34))}\0{last_modified.timestamp():.6f}"
    return "w" + hashlib.sha256(version.encode()).hexdigest()[:31]


def output_key(source: S3Location, output: S3Location, key: str) -> str:
    """Where an object's blurred copy lands: its path below the watched folder, under the output one."""
    return f"{output.prefix}{key.removeprefix(source.prefix)}"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# Write a done entry unless the key holds one for the same job already; count it once.
# KEYS: entry, stats, failed. ARGV: entry JSON, job id, outcome, TTL (0: none), now, source key.
_RECORD = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['job_id'] == ARGV[2] then
    return 0
end
if ARGV[4] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
else
    redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
if ARGV[3] == 'failed' then
    redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
else
    redis.call('ZREM', KEYS[3], ARGV[6])
end
return 1
"""


class WatchState:
    """What Redis remembers of one watched location."""

    def __init__(self, redis: Redis, prefix: str, source: S3Location) -> None:
        self._redis = redis
        self.base = f"{prefix}:watch:{_hash(source.url())}"
        self.stats_key = f"{self.base}:stats"
        self.failed_key = f"{self.base}:failed"
        self.lock_key = f"{self.base}:lock"
        self._cursor_key = f"{self.base}:cursor"
        self._record = redis.register_script(_RECORD)

    def entry_key(self, key: str) -> str:
        return f"{self.base}:done:{_hash(key)}"

    async def entries(self, keys: list[str]) -> list[DoneEntry | None]:
        if not keys:
            return []
        raws = await self._redis.mget([self.entry_key(key) for key in keys])
        return [None if raw is None else DoneEntry.model_validate_json(raw) for raw in raws]

    async def record(self, key: str, entry: DoneEntry, *, now: float, deleting: bool = False) -> bool:
        """Write ``key``'s entry; True if it is new (then counted), False if it was there already.
        ``deleting``: its source is about to be deleted, so the entry lingers only a while, even if the
        step that marks it applied never comes (the poll was killed right after the delete)."""
        ttl = DELETED_ENTRY_TTL_SECONDS if deleting else 0
        written = await self._record(
            keys=[self.entry_key(key), self.stats_key, self.failed_key],
            args=[entry.model_dump_json(), entry.job_id, entry.outcome.value, ttl, repr(now), key],
        )
        return bool(written)

    async def applied(self, key: str, entry: DoneEntry, *, deleted: bool) -> None:
        """The ``after`` action is done; a deleted source's entry lingers only while listings may lag."""
        done = entry.model_copy(update={"applied": True})
        ttl = DELETED_ENTRY_TTL_SECONDS if deleted else None
        await self._redis.set(self.entry_key(key), done.model_dump_json(), ex=ttl)

    async def cursor(self) -> str | None:
        raw = await self._redis.get(self._cursor_key)
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def set_cursor(self, key: str | None) -> None:
        if key is None:
            await self._redis.delete(self._cursor_key)
        else:
            await self._redis.set(self._cursor_key, key)

    async def stats(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self.stats_key)  # type: ignore[misc]
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
