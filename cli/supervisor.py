"""Keeps ``veil up``'s children running: one that exits on its own is started again, the others untouched.

Each child comes with the function that starts it, so a restart brings it back exactly where it was
(Redis on the same port and data dir, so its append-only file brings the data back and every other
process's URL stays valid; SeaweedFS on the same ports and dir). Restarts wait 1, 2, 4 … 30 s; a child
that stayed up a minute starts again from 1 s. One that exits 5 times within a minute (it cannot start,
or dies at once) is given up on: :meth:`Supervisor.check` raises :class:`GaveUp` and ``veil up`` stops.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from cli.embedded import EmbeddedError, Service

S = TypeVar("S", bound=Service)


class GaveUp(RuntimeError):
    """A child kept exiting; restarting it again would only hide the problem."""


@dataclass
class Backoff:
    """When to start a child again after it exited: ``first`` s, doubling up to ``cap``; back to ``first``
    once a run lasted ``stable_after`` s. ``None`` (give up) at the ``max_exits``-th exit in ``window`` s."""

    first: float = 1.0
    cap: float = 30.0
    stable_after: float = 60.0
    max_exits: int = 5
    window: float = 60.0
    _quick_exits: int = 0  # exits in a row, each before the child had stayed up ``stable_after``
    _exit_times: deque[float] = field(default_factory=deque)

    def after_exit(self, now: float, uptime: float) -> float | None:
        """The pause before the next start of a child that exited at ``now`` after ``uptime`` s up."""
        if uptime >= self.stable_after:
            self._quick_exits = 0
        self._exit_times.append(now)
        while self._exit_times and self._exit_times[0] <= now - self.window:
            self._exit_times.popleft()
        if len(self._exit_times) >= self.max_exits:
            return None
        delay = min(self.cap, self.first * 2.0**self._quick_exits)
        self._quick_exits += 1
        return delay


@dataclass
class Child:
    name: str
    start: Callable[[], Service]  # starts the process (again) with the same ports, dirs and environment
    service: Service
    started_at: float
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # set while it is down, waiting to be started again
    restarts: int = 0


class Supervisor:
    """Children started in order, watched by :meth:`check`, stopped in reverse order by :meth:`stop`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        out: TextIO | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.children: list[Child] = []
        self._clock = clock
        self._out = out
        self._backoff = backoff

    def start(self, name: str, start: Callable[[], S]) -> S:
        """Start a child now (an error propagates: a stack that cannot start at all does not start)."""
        service = start()
        self.children.append(Child(name, start, service, self._clock(), self._backoff()))
        return service

    @property
    def services(self) -> list[Service]:
        return [child.service for child in self.children]

    def check(self) -> None:
        """Notice children that exited and start those whose pause is over. Raises :class:`GaveUp`."""
        for child in self.children:
            now = self._clock()
            if child.restart_at is None:
                code = child.service.proc.poll()
                if code is not None:
                    child.service.stop()  # reaps it; SeaweedFS also removes the sockets it left in /tmp
                    self._exited(child, f"exited (code {code}; log: {child.service.log})", now)
            elif now >= child.restart_at:
                self._restart(child)

    def _exited(self, child: Child, what: str, now: float) -> None:
        delay = child.backoff.after_exit(now, now - child.started_at)
        if delay is None:
            message = (
                f"{child.name} {what}; it exited {child.backoff.max_exits} times within "
                f"{child.backoff.window:.0f}s, giving up"
            )
            self._say(message)
            raise GaveUp(message)
        child.restarts += 1
        child.restart_at = now + delay
        self._say(f"{child.name} {what}; restarting in {delay:g}s (restart {child.restarts})")

    def _restart(self, child: Child) -> None:
        try:
            child.service = child.start()
        except (EmbeddedError, OSError) as exc:  # it could not start again: one more exit, a longer pause
            child.started_at = self._clock()
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._exited(child, f"failed to start again ({first_line})", child.started_at)
            return
        child.started_at = self._clock()
        child.restart_at = None

    def stop(self) -> None:
        for child in reversed(self.children):
            child.service.stop()
        self.children.clear()

    def _say(self, message: str) -> None:
        print(f"veil up: {message}", file=self._out or sys.stderr, flush=True)
