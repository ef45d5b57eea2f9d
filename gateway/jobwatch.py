"""Requests held open until their job finishes (``wait``): one Redis subscription per gateway process.

Writers of finished records publish the job id (:func:`shared.jobstore.finished_channel`); one listener
task wakes the requests waiting for that id, which then read the record once. Without it every waiting
request polled its record every 75 ms, which on a small machine cost more CPU than the upload itself.

Notifications are a shortcut, never the only path: while the subscription is not confirmed (Redis down,
reconnecting) waiters poll at the short interval as before; every (re)subscription wakes all waiters to
look once more (redis-py re-subscribes by itself after a reconnect), and while subscribed they still
re-read their record every ``fallback_interval`` seconds as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis

from shared.subscription import listen


class FinishedJobs:
    def __init__(self, redis: Redis, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = False  # subscribed, confirmed by Redis

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set when ``job_id`` is announced as finished (or the subscription was renewed and
        waiters should look again). Register before reading the record, so no announcement is missed."""
        self._ensure_listener()
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[job_id]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ensure_listener(self) -> None:
        # Started on first use, not at start-up: the gateway starts (and answers 503) while Redis is down.
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="finished-jobs")

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def _set_listening(self, listening: bool) -> None:
        self.listening = listening
        self._wake_all()  # subscribed again (look once more at anything finished meanwhile), or lost: poll

    async def _listen(self) -> None:
        await listen(self._redis, self._channel, self._wake, self._set_listening, "job notifications")
