"""When the worker's poll loop looks at the queue again: at once when a job is queued (announced on
:func:`shared.queue.queued_channel`) or one of its own jobs ends (a slot is free), else on a slow timer.

arq polls on a fixed timer; at the 50 ms that keeps a job's start latency low, an idle worker spent ~33 ms
of CPU a second on it (2 vCPUs), and Redis answered 20 queue reads a second per worker. The timer stays
as the safety net (and for jobs deferred to later, which nobody announces), short again while the
subscription is down.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from shared.subscription import listen

IDLE_POLL_SECONDS = 0.5  # arq's own default poll delay
UNSUBSCRIBED_POLL_SECONDS = 0.05


class QueueWakeup:
    def __init__(
        self,
        redis: Redis,
        channel: str,
        idle_poll_s: float = IDLE_POLL_SECONDS,
        unsubscribed_poll_s: float = UNSUBSCRIBED_POLL_SECONDS,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._idle_poll_s = idle_poll_s
        self._unsubscribed_poll_s = unsubscribed_poll_s
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.listening = False

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="queue-wakeup")

    def poke(self, *_: object) -> None:
        """Look at the queue now (usable as a callback: a message, a finished task)."""
        self._event.set()

    async def wait(self) -> None:
        """Until poked, or the timer runs out; a poke that came while the caller was busy counts."""
        timeout = self._idle_poll_s if self.listening else self._unsubscribed_poll_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _set_listening(self, listening: bool) -> None:
        self.listening = listening
        self.poke()  # (re)subscribed: jobs queued meanwhile went unannounced; lost: back to the short timer

    async def _listen(self) -> None:
        await listen(self._redis, self._channel, self.poke, self._set_listening, "queue wake-ups")
