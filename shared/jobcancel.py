"""Cancelling one job (``POST /v1/jobs/{id}/cancel``): a flag in Redis beside the job's record.

The gateway sets it; the worker reads it when it starts the job (a queued job then ends ``CANCELLED``
unread, its upload deleted) and, for a video, about once a second while it runs: the pipeline stops at its
next batch and the job fails ``CANCELLED`` with nothing written. A photo already running finishes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.jobstore import RECORD_TTL_SECONDS


class CancelFlags:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job-cancel:{job_id}"

    async def cancel(self, job_id: str) -> None:
        """Ask for the job to be cancelled (kept as long as a record may be)."""
        await self._redis.set(self._key(job_id), "1", ex=RECORD_TTL_SECONDS)

    async def cancelled(self, job_id: str) -> bool:
        return bool(await self._redis.exists(self._key(job_id)))
