"""`veil up`'s supervisor: the backoff schedule, and real child processes killed and started again."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.embedded import EmbeddedError, Service, popen_logged
from cli.supervisor import Backoff, GaveUp, Supervisor


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff()
    # Quick exits, but far apart in time: never 5 within the window.
    delays = [backoff.after_exit(now=100.0 * i, uptime=1.0) for i in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_starts_again_from_the_first_pause_after_a_stable_run() -> None:
    backoff = Backoff()
    assert [backoff.after_exit(now=100.0 * i, uptime=1.0) for i in range(3)] == [1, 2, 4]
    assert backoff.after_exit(now=1000.0, uptime=60.0) == 1
    assert backoff.after_exit(now=1100.0, uptime=5.0) == 2


def test_backoff_gives_up_at_the_fifth_exit_within_a_minute() -> None:
    backoff = Backoff()
    assert [backoff.after_exit(now=t, uptime=0.5) for t in (0.0, 2.0, 5.0, 10.0)] == [1, 2, 4, 8]
    assert backoff.after_exit(now=19.0, uptime=0.5) is None


def test_backoff_forgets_exits_older_than_the_window() -> None:
    backoff = Backoff()
    for t in (0.0, 2.0, 5.0, 10.0):
        assert backoff.after_exit(now=t, uptime=0.5) is not None
    assert backoff.after_exit(now=61.0, uptime=30.0) == 16  # the exit at 0 s has left the window


def _sleeper(name: str, log_dir: Path) -> Callable[[], Service]:
    def start() -> Service:
        log = log_dir / f"{name}.log"
        return Service(
            name, popen_logged([sys.executable, "-c", "import time; time.sleep(60)"], log, log_dir), log
        )

    return start


def _check_until(supervisor: Supervisor, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"the supervisor did not {what} within 30 s"
        supervisor.check()
        time.sleep(0.02)


def test_a_killed_child_is_started_again_and_the_others_keep_running(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=lambda: Backoff(first=0.05))
    try:
        first = supervisor.start("first", _sleeper("first", tmp_path))
        second = supervisor.start("second", _sleeper("second", tmp_path))
        os.kill(first.proc.pid, signal.SIGKILL)
        _check_until(supervisor, lambda: supervisor.services[0].proc.pid != first.proc.pid, "restart it")
        restarted = supervisor.services[0]
        assert restarted.proc.poll() is None
        assert supervisor.services[1] is second and second.proc.poll() is None
        assert out.getvalue() == (
            f"veil up: first exited (code -9; log: {first.log}); restarting in 0.05s (restart 1)\n"
        )
    finally:
        supervisor.stop()
    assert restarted.proc.poll() is not None and second.proc.poll() is not None


def test_a_child_that_keeps_exiting_is_given_up_on(tmp_path: Path) -> None:
    def start() -> Service:
        log = tmp_path / "crasher.log"
        return Service(
            "crasher", popen_logged([sys.executable, "-c", "raise SystemExit(3)"], log, tmp_path), log
        )

    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=lambda: Backoff(first=0.01, max_exits=3))
    supervisor.start("crasher", start)
    with pytest.raises(GaveUp, match=r"crasher exited .*3 times within 60s, giving up"):
        _check_until(supervisor, lambda: False, "give up")
    lines = out.getvalue().splitlines()
    assert [line.split(";")[-1] for line in lines[:2]] == [
        " restarting in 0.01s (restart 1)",
        " restarting in 0.02s (restart 2)",
    ]
    assert "code 3" in lines[-1]
    supervisor.stop()


def test_a_child_that_cannot_start_again_is_retried_with_longer_pauses(tmp_path: Path) -> None:
    starts = [_sleeper("flaky", tmp_path)]

    def start() -> Service:
        if starts:
            return starts.pop()()
        raise EmbeddedError("redis-server exited with code 1:\nthe log's tail")

    out = io.StringIO()
    supervisor = Supervisor(out=out, backoff=lambda: Backoff(first=0.01, max_exits=3))
    first = supervisor.start("flaky", start)
    os.kill(first.proc.pid, signal.SIGKILL)
    with pytest.raises(GaveUp):
        _check_until(supervisor, lambda: False, "give up")
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "veil up: flaky failed to start again (redis-server exited with code 1:); "
        "restarting in 0.02s (restart 2)"
    )
    assert len(lines) == 3
    supervisor.stop()
