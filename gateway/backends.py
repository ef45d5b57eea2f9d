"""The gateway's Redis connection: opened lazily and failing fast, so the gateway starts (and answers 503)
while Redis is down; Redis failures become :class:`shared.errors.QueueUnavailableError`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from shared.errors import QueueUnavailableError
from shared.queue import queue_client
from shared.settings import RedisSettings

log = logging.getLogger(__name__)


def connect_redis(settings: RedisSettings) -> ArqRedis:
    """One client for job records, API keys and the arq queue. Connects on first use, not here.

    Unlike :func:`shared.queue.open_pool` this does not ping, so start-up does not depend on Redis.
    """
    return queue_client(settings, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn Redis being down or slow into a 503 ``QUEUE_UNAVAILABLE``."""
    try:
        yield
    except (RedisError, OSError) as exc:
        # The detail (addresses, ports) goes to the log, not to clients.
        log.warning("Redis unavailable while %s: %s", action, exc)
        raise QueueUnavailableError(f"the queue is unavailable ({action}); try again later") from exc
