"""The arq queue: one JSON (orjson) serializer for both sides, and the enqueue call both sides use.

Only arq's public API: ``ArqRedis.enqueue_job`` with the job's id as arq's ``_job_id`` (docs/decisions.md,
"arq", says what was removed and why).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.connections import RedisSettings as ArqRedisSettings

from shared.jobs import JobRequest
from shared.redisconn import redis_pool
from shared.redisurl import DirectRedis, parse_redis_url
from shared.settings import RedisSettings

ANONYMIZE_FUNCTION = "anonymize"
# The same task for video jobs, under its own arq timeout (VEIL_VIDEO__JOB_TIMEOUT_SECONDS).
ANONYMIZE_VIDEO_FUNCTION = "anonymize_video"


def serialize(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, default=str)


def deserialize(raw: bytes) -> dict[str, Any]:
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("queue payload is not a JSON object")
    return value


def queue_client(settings: RedisSettings, **options: Any) -> ArqRedis:
    """The queue's client (and Redis client for everything else), through the one factory
    (:func:`shared.redisconn.redis_pool`); connects on first use. ``options``: redis-py's."""
    client = ArqRedis(
        redis_pool(settings.url, **options),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
    client.auto_close_connection_pool = True  # aclose() closes its pool: the client owns it
    return client


def arq_redis_settings(settings: RedisSettings) -> ArqRedisSettings:
    """arq's own connection settings for the same URL, for a ``Worker`` built without a pool (tests).
    Fail fast when Redis is down: callers map the error to 503 instead of hanging."""
    target = parse_redis_url(settings.url)
    if isinstance(target, DirectRedis):
        arq_settings = ArqRedisSettings.from_dsn(target.url)
    else:  # arq asks the sentinels itself (without their password: give workers a pool for that)
        arq_settings = ArqRedisSettings(
            host=list(target.sentinels),
            database=target.db,
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            sentinel=True,
            sentinel_master=target.service_name,
        )
    return replace(arq_settings, conn_timeout=2, conn_retries=1, conn_retry_delay=0)


async def open_pool(settings: RedisSettings) -> ArqRedis:
    """:func:`queue_client`, checked with a ping: fails fast (2 s to connect) when Redis is down."""
    pool = queue_client(settings, socket_connect_timeout=2)
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose()
        raise
    return pool


async def enqueue_anonymize(pool: ArqRedis, request: JobRequest, queue_name: str) -> bool:
    """Queue a blur job under its own id as arq's job id, so a repeated enqueue of the same job is a
    no-op: False if arq already holds the id (queued, running, or its result still kept). Like any arq
    job it expires unstarted after the pool's ``expires_extra_ms`` (a day by default)."""
    function = ANONYMIZE_VIDEO_FUNCTION if request.input.is_video else ANONYMIZE_FUNCTION
    job = await pool.enqueue_job(
        function, request.model_dump(mode="json"), _job_id=request.id, _queue_name=queue_name
    )
    return job is not None
