"""The detection timeout counts detection only: the clock starts when an inference lane starts the job, not
while the job waits for a free lane. The runner here is a stand-in (the Runner protocol exists for that);
Redis and S3 play no part in these timing rules."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import DetectionTimeoutError
from workers.lanes import detect_in_lane


@pytest.fixture
def one_lane() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def _occupy(executor: ThreadPoolExecutor) -> tuple[threading.Event, threading.Event]:
    """A job holding the only lane until released; returns (started, release)."""
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(30)

    executor.submit(busy)
    assert started.wait(10)
    return started, release


async def test_waiting_for_a_lane_does_not_count_against_the_timeout(one_lane: ThreadPoolExecutor) -> None:
    _, release = _occupy(one_lane)
    seen: list[bool] = []

    def fast(expired: Callable[[], bool]) -> str:
        seen.append(expired())
        return "blurred"

    job = asyncio.ensure_future(detect_in_lane(one_lane, fast, seconds=0.3))
    await asyncio.sleep(1.0)  # more than the timeout, all of it spent waiting for the lane
    assert not job.done()
    release.set()
    outcome = await job
    assert outcome.value == "blurred"
    assert seen == [False]  # the detection's own clock had just started
    assert outcome.lane_wait_s >= 1.0


async def test_a_detection_longer_than_the_timeout_fails(one_lane: ThreadPoolExecutor) -> None:
    stop = threading.Event()

    def hangs(expired: Callable[[], bool]) -> str:  # ignores its deadline: the task still gives up
        stop.wait(30)
        return "too late"

    try:
        with pytest.raises(DetectionTimeoutError):
            await detect_in_lane(one_lane, hangs, seconds=0.2)
    finally:
        stop.set()


async def test_the_runner_sees_its_deadline_pass(one_lane: ThreadPoolExecutor) -> None:
    passes: list[int] = []

    def cooperative(expired: Callable[[], bool]) -> str:
        while not expired():
            passes.append(1)
            time.sleep(0.05)
        raise DetectionTimeoutError("stopped between passes")

    with pytest.raises(DetectionTimeoutError):
        await detect_in_lane(one_lane, cooperative, seconds=0.2)
    assert passes  # it ran until its own deadline, then stopped by itself


async def test_a_cancelled_job_never_takes_the_lane(one_lane: ThreadPoolExecutor) -> None:
    _, release = _occupy(one_lane)
    ran: list[str] = []
    job = asyncio.ensure_future(detect_in_lane(one_lane, lambda expired: ran.append("ran"), seconds=5))
    await asyncio.sleep(0.1)
    job.cancel()  # arq's job timeout while the job waits for a lane
    with pytest.raises(asyncio.CancelledError):
        await job
    release.set()
    await asyncio.get_running_loop().run_in_executor(one_lane, lambda: None)  # the lane drained
    assert ran == []
