"""The arq queue: one JSON (orjson) serializer for both sides, and the enqueue call both sides use.

Only arq's public API: ``ArqRedis.enqueue_job`` with the job's id as arq's ``_job_id`` (docs/decisions.md,
"arq", says what was removed and why).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from arq import create_pool
from arq.connections import ArqRedis
from arq.connections import RedisSettings as ArqRedisSettings

from shared.jobs import JobRequest
from shared.settings import RedisSettings

ANONYMIZE_FUNCTION = "anonymize"


def serialize(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, default=str)


def deserialize(raw: bytes) -> dict[str, Any]:
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("queue payload is not a JSON object")
    return value


def arq_redis_settings(settings: RedisSettings) -> ArqRedisSettings:
    # Fail fast when Redis is down: callers map the error to 503 instead of hanging.
    return replace(
        ArqRedisSettings.from_dsn(settings.url), conn_timeout=2, conn_retries=1, conn_retry_delay=0
    )


async def open_pool(settings: RedisSettings) -> ArqRedis:
    pool: ArqRedis = await create_pool(
        arq_redis_settings(settings),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
    return pool


async def enqueue_anonymize(pool: ArqRedis, request: JobRequest, queue_name: str) -> bool:
    """Queue a blur job under its own id as arq's job id, so a repeated enqueue of the same job is a
    no-op: False if arq already holds the id (queued, running, or its result still kept). Like any arq
    job it expires unstarted after the pool's ``expires_extra_ms`` (a day by default)."""
    job = await pool.enqueue_job(
        ANONYMIZE_FUNCTION, request.model_dump(mode="json"), _job_id=request.id, _queue_name=queue_name
    )
    return job is not None
