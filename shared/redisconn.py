"""The one place Redis connections are made: every client Veil opens (gateway, workers, arq's queue, the
``veil`` commands) comes from :func:`redis_pool`, so ``VEIL_REDIS__URL`` means the same everywhere — one
server, or a master found through Redis Sentinel (:mod:`shared.redisurl`).

Nothing connects here: redis-py connects on first use (and, behind Sentinel, asks the sentinels for the
master then, and again after a failover).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from shared.redisurl import DirectRedis, SentinelRedis, parse_redis_url


def redis_pool(url: str, **options: Any) -> ConnectionPool:
    """A connection pool for ``url``; ``options`` are redis-py connection options (timeouts, health
    checks), given to the master's connections and, for the ``socket_*`` ones, to the sentinels'."""
    target = parse_redis_url(url)
    if isinstance(target, DirectRedis):
        return ConnectionPool.from_url(target.url, **options)
    return _sentinel_pool(target, options)


def _sentinel_pool(target: SentinelRedis, options: dict[str, Any]) -> ConnectionPool:
    asked: dict[str, Any] = {key: value for key, value in options.items() if key.startswith("socket_")}
    if target.sentinel_password is not None:
        asked["password"] = target.sentinel_password
        asked["username"] = target.sentinel_username
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=asked)  # type: ignore[no-untyped-call]
    pool: ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service_name,
        manager,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        **options,
    )
    return pool


def redis_client(url: str, **options: Any) -> Redis:
    """A client that owns its pool: ``await client.aclose()`` closes both."""
    return Redis.from_pool(redis_pool(url, **options))
