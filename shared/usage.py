"""Usage per API key per UTC day, kept in Redis for about 400 days.

One hash per key and day, ``<prefix>:usage:<key id>:<YYYY-MM-DD>``: ``submitted`` (counted when a job is
accepted: ``shared/quotas.py``), and, counted once when its final record is written
(``shared/jobstore.py``'s final script, exactly once however often the job is re-run), ``succeeded``,
``failed``, ``credits`` (one per succeeded image), ``pixels`` (of succeeded images) and ``det:<class>``
(detections by class). A day with no use has no hash.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel
from redis.asyncio import Redis

USAGE_TTL_SECONDS = 400 * 24 * 3600
MAX_DAYS = 400  # days one query may span (older ones have expired anyway)
DETECTION_FIELD = "det:"


def usage_prefix(prefix: str, key_id: str) -> str:
    return f"{prefix}:usage:{key_id}:"


def usage_day_key(prefix: str, key_id: str, day: date) -> str:
    return usage_prefix(prefix, key_id) + day.isoformat()


class UsageDay(BaseModel):
    key_id: str
    day: date
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    detections: dict[str, int]
    megapixels: float = 0.0
    credits: int = 0

    @classmethod
    def from_hash(cls, key_id: str, day: date, fields: dict[str, int]) -> UsageDay:
        return cls(
            key_id=key_id,
            day=day,
            submitted=fields.get("submitted", 0),
            succeeded=fields.get("succeeded", 0),
            failed=fields.get("failed", 0),
            detections={
                name.removeprefix(DETECTION_FIELD): count
                for name, count in sorted(fields.items())
                if name.startswith(DETECTION_FIELD)
            },
            megapixels=round(fields.get("pixels", 0) / 1_000_000, 3),
            credits=fields.get("credits", 0),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class UsageStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def days(self, key_id: str, start: date, end: date) -> list[UsageDay]:
        """Each day from ``start`` to ``end`` (inclusive) the key was used, oldest first."""
        if end < start:
            raise ValueError(f"the range ends ({end}) before it starts ({start})")
        if (end - start).days >= MAX_DAYS:
            raise ValueError(f"at most {MAX_DAYS} days at once")
        span = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in span:
                pipe.hgetall(usage_day_key(self._prefix, key_id, day))
            replies = await pipe.execute()
        found: list[UsageDay] = []
        for day, raw in zip(span, replies, strict=True):
            if raw:
                fields = {_text(name): int(value) for name, value in raw.items()}
                found.append(UsageDay.from_hash(key_id, day, fields))
        return found

    async def erase(self, key_id: str, today: date | None = None) -> None:
        """Delete every day of the key's usage still kept (and its old all-time ``images`` count)."""
        last = today or datetime.now(UTC).date()
        names = [
            usage_day_key(self._prefix, key_id, last - timedelta(days=offset))
            for offset in range(-1, MAX_DAYS + 2)
        ]
        names.append(f"{self._prefix}:usage:{key_id}")
        for start in range(0, len(names), 200):
            await self._redis.delete(*names[start : start + 200])
