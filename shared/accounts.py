"""Everything Veil holds about one API key (its account), as one JSON document (:meth:`Accounts.export`) or
deleted (:meth:`Accounts.erase`): the privacy requests of docs/privacy.md.

What a key's id reaches: its record (never the token's digest nor the webhook secret in an export), its
limits and quota state (shared/quotas.py), its usage days (shared/usage.py), its jobs' records (the owner
index of shared/jobstore.py) and their webhook deliveries, its bulk jobs and theirs, and the objects still in
Veil's bucket for those jobs: originals, results, a facade's logo. A bulk job's copies in a customer's own
bucket, and ``s3`` inputs there, are the customer's and stay.

Erasure revokes the key first (no new jobs), refuses while a job is still queued or running (it would write
again after the erasure: 409 ``JOBS_IN_FLIGHT``; erase again once they end), deletes the objects (through
:class:`ObjectStore`, so a store that is down fails the erasure, which can simply be repeated), then every
Redis key under the prefix that names the key id, a job id or a bulk id as one of its ``:``-separated parts
(one SCAN of the prefix: what later code adds per key or per job goes too), the entries shared structures
hold for them, and arq's kept webhook results. It ends with one audit line, in the log and in the Redis list
``<prefix>:audit``: the key id, the time and counts, nothing personal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from arq.constants import result_key_prefix
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore
from shared.bulk import BulkRecord, BulkStore
from shared.deliveries import DeliveryStore, Kind, arq_job_id
from shared.errors import ConflictError
from shared.jobs import ImageFormat, JobRecord, ObjectRef
from shared.jobstore import JobStore, object_member
from shared.quotas import QuotaStore
from shared.redisutil import resolve
from shared.storage import ObjectStore
from shared.usage import MAX_DAYS, UsageStore

log = logging.getLogger(__name__)

AUDIT_KEPT = 10_000  # audit lines kept in Redis (the log keeps them all)
SCAN_COUNT = 1000
STORE_CALLS_AT_ONCE = 8
EXPORT_VERSION = 1


class JobsInFlightError(ConflictError):
    code = "JOBS_IN_FLIGHT"


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed: counts only (it is the audit line)."""

    key_id: str
    key_revoked: bool
    jobs: int
    bulk_jobs: int
    deliveries: int
    objects: int
    redis_keys: int

    def held_anything(self) -> bool:
        return self.key_revoked or any((self.jobs, self.bulk_jobs, self.objects, self.redis_keys))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Accounts:
    """A key's data across the stores; ``keys`` lends its Redis connection and prefix."""

    def __init__(self, keys: ApiKeyStore, store: ObjectStore) -> None:
        self.keys = keys
        self._redis: Redis = keys.redis
        self._prefix = keys.prefix
        self._store = store
        self.jobs = JobStore(self._redis, self._prefix)
        self.bulks = BulkStore(self._redis, self._prefix)
        self.deliveries = DeliveryStore(self._redis, self._prefix)
        self.quotas = QuotaStore(self._redis, self._prefix)
        self.usage = UsageStore(self._redis, self._prefix)
        self.audit_key = f"{self._prefix}:audit"

    # -- export -------------------------------------------------------------------------------------------

    async def export(self, key_id: str, now: datetime | None = None) -> dict[str, Any] | None:
        """Everything held about ``key_id`` as one JSON-ready document; None when nothing is."""
        moment = now or datetime.now(UTC)
        key = await self.keys.get(key_id)
        records = await self._records(key_id)
        bulks = await self._bulks(key_id)
        usage = await self.usage.days(key_id, self._usage_start(moment), moment.date())
        if key is None and not records and not bulks and not usage:
            return None
        return {
            "version": EXPORT_VERSION,
            "exported_at": moment.isoformat(),
            "key_id": key_id,
            "key": None if key is None else key.public(),
            "quota": (await self.quotas.state(key_id, moment)).model_dump(mode="json"),
            "usage": [day.model_dump(mode="json") for day in usage],
            "jobs": [record.public() for record in records],
            "bulk_jobs": [_bulk_view(record) for record in bulks],
            "deliveries": {
                "jobs": await self._attempts("job", [record.id for record in records]),
                "bulk": await self._attempts("bulk", [record.id for record in bulks]),
            },
        }

    # -- erase --------------------------------------------------------------------------------------------

    async def erase(self, key_id: str, now: datetime | None = None) -> Erasure | None:
        """Delete everything held about ``key_id`` (see the module); None when nothing was held.
        :class:`JobsInFlightError` (the key is revoked by then) while a job of it is queued or running."""
        moment = now or datetime.now(UTC)
        revoked = await self.keys.revoke(key_id)
        job_ids = await self.jobs.ids_of_owner(key_id)
        records = [record for record in await self.jobs.get_many(job_ids) if record is not None]
        running = [record.id for record in records if not record.status.finished]
        if running:
            raise JobsInFlightError(
                f"the key is revoked, but {len(running)} of its jobs are still queued or running; erase"
                " again once they have ended (within the job timeout)"
            )
        bulks = await self._bulks(key_id)
        deliveries = await self._delivery_count(job_ids, [bulk.id for bulk in bulks])
        objects = await self._delete_objects(records)
        await self._forget_shared(job_ids, records)
        await self.quotas.erase(key_id, moment)
        await self.usage.erase(key_id)
        await self.jobs.forget_owner(key_id)
        await self._delete_arq_results(job_ids, [bulk.id for bulk in bulks])
        removed = await self._delete_named({key_id, *job_ids, *(bulk.id for bulk in bulks)})
        erasure = Erasure(key_id, revoked, len(job_ids), len(bulks), deliveries, objects, removed)
        if not erasure.held_anything():
            return None
        await self._audit(erasure, moment)
        return erasure

    async def audit_lines(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit lines, newest first."""
        raw = await resolve(self._redis.lrange(self.audit_key, 0, limit - 1))
        return [orjson.loads(line) for line in raw]

    # -- parts --------------------------------------------------------------------------------------------

    def _usage_start(self, moment: datetime) -> date:
        return moment.date() - timedelta(days=MAX_DAYS - 1)  # every day still kept

    async def _records(self, key_id: str) -> list[JobRecord]:
        ids = await self.jobs.ids_of_owner(key_id)
        return [record for record in await self.jobs.get_many(ids) if record is not None]

    async def _bulks(self, key_id: str) -> list[BulkRecord]:
        """The key's bulk jobs: their records are not indexed by owner, so one SCAN of ``bulk:*`` records
        (bulk jobs are few, and live 48 h)."""
        found: list[BulkRecord] = []
        pattern = f"{self._prefix}:bulk:*"
        async for name in self._redis.scan_iter(match=pattern, count=SCAN_COUNT, _type="string"):
            if ":" in _text(name).removeprefix(f"{self._prefix}:bulk:"):
                continue  # a part of a bulk job (":cancelled", ":finished"), not its record
            raw = await self._redis.get(name)
            if raw is None:
                continue
            record = BulkRecord.model_validate_json(raw)
            if record.owner == key_id:
                found.append(record)
        return found

    async def _attempts(self, kind: Kind, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for subject_id in ids:
            attempts = await self.deliveries.attempts(kind, subject_id)
            if attempts:
                out[subject_id] = [attempt.model_dump(mode="json") for attempt in attempts]
        return out

    async def _delivery_count(self, job_ids: Iterable[str], bulk_ids: Iterable[str]) -> int:
        jobs = await self._attempts("job", job_ids)
        bulks = await self._attempts("bulk", bulk_ids)
        return sum(len(attempts) for attempts in (*jobs.values(), *bulks.values()))

    def _candidate_keys(self, record: JobRecord) -> set[str]:
        """Keys in Veil's bucket a job may have left: its upload, its result (each format), its logo."""
        settings = self._store.settings
        keys = {self._store.upload_key(record.id)}
        keys.update(self._store.result_key(record.id, fmt.extension) for fmt in ImageFormat)
        if record.result is not None:
            keys.add(record.result.key)
        logo = record.options.logo_key
        if logo is not None and logo.startswith(settings.uploads_prefix):
            keys.add(logo)
        return keys

    async def _delete_objects(self, records: list[JobRecord]) -> int:
        """Delete what exists of each job's objects; returns how many existed."""
        gate = asyncio.Semaphore(STORE_CALLS_AT_ONCE)

        async def one(key: str) -> bool:
            async with gate:
                if not await asyncio.to_thread(self._store.exists, key):
                    return False
                await asyncio.to_thread(self._store.delete, key)
                return True

        keys = sorted({key for record in records for key in self._candidate_keys(record)})
        return sum(await asyncio.gather(*(one(key) for key in keys)))

    async def _forget_shared(self, job_ids: list[str], records: list[JobRecord]) -> None:
        """The jobs' entries in structures every job shares: the sweeper's indexes, pending deletions."""
        members = [
            object_member(ref)
            for record in records
            for ref in _refs(self._store, self._candidate_keys(record))
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                pipe.zrem(self.jobs.deadlines_key, *chunk)
                pipe.hdel(self.jobs.running_key, *chunk)
            for start in range(0, len(members), 500):
                pipe.zrem(self.jobs.deletions_key, *members[start : start + 500])
            await pipe.execute()

    async def _delete_arq_results(self, job_ids: list[str], bulk_ids: list[str]) -> None:
        """arq keeps a webhook delivery's result (its arguments: the callback URL) for an hour."""
        names: list[str] = []
        subjects: list[tuple[Kind, list[str]]] = [("job", job_ids), ("bulk", bulk_ids)]
        for kind, ids in subjects:
            for subject_id in ids:
                last = await self.deliveries.redelivery(kind, subject_id)
                names.extend(
                    result_key_prefix + arq_job_id(kind, subject_id, number) for number in range(last + 1)
                )
        for start in range(0, len(names), 500):
            await self._redis.delete(*names[start : start + 500])

    async def _delete_named(self, ids: set[str]) -> int:
        """Delete every key under the prefix with one of ``ids`` as a ``:``-separated part; how many."""
        removed = 0
        batch: list[bytes | str] = []
        async for name in self._redis.scan_iter(match=f"{self._prefix}:*", count=SCAN_COUNT):
            parts = _text(name).removeprefix(f"{self._prefix}:").split(":")
            if not ids.isdisjoint(parts):
                batch.append(name)
            if len(batch) >= 500:
                removed += int(await self._redis.delete(*batch))
                batch = []
        if batch:
            removed += int(await self._redis.delete(*batch))
        return removed

    async def _audit(self, erasure: Erasure, moment: datetime) -> None:
        line = {"event": "key.erased", "at": moment.isoformat(), **asdict(erasure)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.audit_key, orjson.dumps(line))
            pipe.ltrim(self.audit_key, 0, AUDIT_KEPT - 1)
            await pipe.execute()
        log.info("audit: %s", orjson.dumps(line).decode())


def _refs(store: ObjectStore, keys: Iterable[str]) -> list[ObjectRef]:
    return [ObjectRef(bucket=store.bucket, key=key) for key in keys]


def _bulk_view(record: BulkRecord) -> dict[str, Any]:
    data: dict[str, Any] = record.model_dump(mode="json", exclude={"owner"})
    return data
