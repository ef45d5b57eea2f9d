"""Running detection on an inference lane with a deadline that counts detection only: the wait for a free
lane is not detection time, and a call past its deadline stops at its next check and gives the lane back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import DetectionTimeoutError

T = TypeVar("T")


@dataclass(frozen=True)
class Laned(Generic[T]):
    value: T
    lane_wait_s: float  # how long the call waited for a free lane before one started it


async def detect_in_lane(
    lanes: Executor, call: Callable[[Callable[[], bool]], T], seconds: float
) -> Laned[T]:
    """Run ``call(expired)`` on an inference lane, where ``expired()`` says whether ``seconds`` have passed
    since the lane started it: waiting for a free lane is not detection time. Raises
    :class:`DetectionTimeoutError` once a started call runs past it (the call itself stops at its next
    check of ``expired``, giving its lane back); a call cancelled before a lane took it never runs."""
    loop = asyncio.get_running_loop()
    submitted = time.monotonic()
    started: list[float] = []

    def on_lane() -> T:
        begun = time.monotonic()
        started.append(begun)
        deadline = begun + seconds
        return call(lambda: time.monotonic() >= deadline)

    work = loop.run_in_executor(lanes, on_lane)
    try:
        wait = seconds
        while not (await asyncio.wait({work}, timeout=wait))[0]:
            if started:  # a lane has it: the rest of its own time, then it is late
                wait = started[0] + seconds - time.monotonic()
                if wait <= 0:
                    raise DetectionTimeoutError(f"detection took longer than {seconds:g}s")
    finally:
        if not work.done():
            work.cancel()
    return Laned(work.result(), started[0] - submitted)
