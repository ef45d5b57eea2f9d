"""One Redis channel, listened to for as long as the process runs: the loop behind the gateway's
finished-job waiters (:mod:`gateway.jobwatch`, on Veil's own channel of finished job records).

Notifications are a shortcut, never the only path: callers keep a timer of their own. ``on_state(True)``
is called each time the subscription is confirmed (again, after a reconnect: anything published while it
was down is lost, so callers look once more), ``on_state(False)`` whenever it is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 1.0  # a bounded read: a dead connection surfaces as an error, not a silent hang


async def listen(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], None],
    on_state: Callable[[bool], None],
    what: str,
) -> None:
    """Runs until cancelled; ``what`` names the notifications in the one warning logged per outage."""
    listening = False
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        data = message["data"]
                        on_message(data.decode() if isinstance(data, bytes) else str(data))
                    elif message["type"] == "subscribe":
                        listening = True
                        on_state(True)
        except asyncio.CancelledError:
            on_state(False)
            raise
        except Exception as exc:  # Redis down or restarting: callers fall back to their timers
            if listening:
                log.warning("%s interrupted: %s", what, exc)
            listening = False
            on_state(False)
            await asyncio.sleep(RETRY_SECONDS)
