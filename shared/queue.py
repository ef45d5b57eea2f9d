"""The arq queue: one JSON (orjson) serializer for both sides, and the enqueue call the gateway uses."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
from arq import create_pool
from arq.connections import ArqRedis
from arq.connections import RedisSettings as ArqRedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.jobs import JobRequest
from shared.settings import RedisSettings

ANONYMIZE_FUNCTION = "anonymize"

# arq's enqueue_job (WATCH; EXISTS; MULTI, PSETEX, ZADD, EXEC: three round trips) as one script, so it can
# also ride in a pipeline with the job's record. Same keys, same job format (arq's own serialize_job), same
# rule: an id arq already holds (queued, running, or its result still kept) is left alone.
# It also wakes idle workers (:func:`queued_channel`).
# KEYS: job key, result key, queue. ARGV: job id, score (ms), ms to live, the serialized job, channel.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
    return 0
end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
"""


def queued_channel(queue_name: str) -> str:
    """Where a job id is published when it is queued: idle workers wait on it instead of polling fast."""
    return f"{queue_name}:queued"


async def announce_queued(redis: Redis, queue_name: str, job_id: str) -> None:
    """For jobs queued with arq's own ``enqueue_job`` (which publishes nothing); without it they still
    start, at the workers' next idle poll."""
    await redis.publish(queued_channel(queue_name), job_id)


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


def stage_anonymize(pipe: Pipeline, request: JobRequest, queue_name: str, *, expires_extra_ms: int) -> None:
    """Add enqueueing ``request`` to ``pipe``, with the job id as arq's id, so a repeated enqueue of the
    same job is a no-op (the pipeline's result for it: 1 queued, 0 already there). Like arq, the job
    expires unstarted after ``expires_extra_ms`` (the pool's ``expires_extra_ms``, a day by default)."""
    now_ms = int(time.time() * 1000)
    job = serialize_job(
        ANONYMIZE_FUNCTION, (request.model_dump(mode="json"),), {}, None, now_ms, serializer=serialize
    )
    keys = [job_key_prefix + request.id, result_key_prefix + request.id, queue_name]
    # EVAL, not EVALSHA: a pipeline would ask SCRIPT EXISTS first, one more round trip each time.
    args = (request.id, str(now_ms), str(expires_extra_ms), job.decode(), queued_channel(queue_name))
    pipe.eval(_ENQUEUE, len(keys), *keys, *args)


async def enqueue_anonymize(pool: ArqRedis, request: JobRequest, queue_name: str) -> bool:
    """Enqueue alone (see :func:`stage_anonymize`); False if arq already holds the id."""
    async with pool.pipeline(transaction=False) as pipe:
        stage_anonymize(pipe, request, queue_name, expires_extra_ms=pool.expires_extra_ms)
        (queued,) = await pipe.execute()
    return bool(queued)
