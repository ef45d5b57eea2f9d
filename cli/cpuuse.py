"""Where the CPU goes while ``veil bench`` runs: CPU time of the local service processes, by role, from /proc.

(b)'s img/s on one machine is its cores divided by everything a photo costs them: the models, and around
them the gateway, the worker's event loop, the object store, Redis and the load generator itself. Read
per photo beside (a)'s model-only CPU, this shows what the service adds and where. Linux only (elsewhere,
and for a remote stack, the snapshot is empty and nothing is printed).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

PROC = Path("/proc")
# Roles, in the order they are printed. The worker's event loop is its main thread (its lanes and the
# inference runtimes' threads are the rest of the worker).
ROLES = ("worker", "worker event loop", "gateway", "seaweedfs", "redis", "bench")
MACHINE_BUSY = "machine busy"
MACHINE_IDLE = "machine idle"


_VEIL_ROLES = {"workers": "worker", "worker": "worker", "gateway": "gateway"}


def role_of(argv: list[bytes]) -> str | None:
    """The stack role of a process by its command line, as ``veil up``, the deploy files and the
    ``veil worker`` / ``veil gateway`` commands start them."""
    args = [arg.decode(errors="replace") for arg in argv if arg]
    if not args:
        return None
    program = os.path.basename(args[0])
    if program.startswith("redis-server"):  # redis rewrites its title to "redis-server host:port"
        return "redis"
    if program == "weed":
        return "seaweedfs"
    for before, after in itertools.pairwise(args):
        if before == "-m" and after in ("workers", "gateway"):
            return _VEIL_ROLES[after]
        if os.path.basename(before) == "veil" and after in ("worker", "gateway"):
            return _VEIL_ROLES[after]
    return None


def cpu_ticks(stat: Path = PROC / "stat") -> list[int] | None:
    """The machine's CPU time counters, user .. steal (the first 8 of /proc/stat); None off Linux."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    return [int(v) for v in fields[1:9]]


def _cpu_seconds(stat: Path) -> float:
    """utime + stime of one process or thread (``/proc/<pid>/stat`` fields 14 and 15)."""
    text = stat.read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(proc: Path = PROC) -> dict[str, float]:
    """CPU seconds so far: per role (summed over its processes), this process (``bench``: the model loop
    in (a), the load generator in (b)), and the machine's busy and idle time. Empty off Linux."""
    ticks = cpu_ticks(proc / "stat")
    if ticks is None:
        return {}
    seconds = dict.fromkeys(ROLES, 0.0)
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(entry.name) == me:
                seconds["bench"] += _cpu_seconds(entry / "stat")
                continue
            role = role_of((entry / "cmdline").read_bytes().split(b"\0"))
            if role is None:
                continue
            seconds[role] += _cpu_seconds(entry / "stat")
            if role == "worker":
                seconds["worker event loop"] += _cpu_seconds(entry / "task" / entry.name / "stat")
        except (OSError, ValueError, IndexError):  # the process ended while we looked
            continue
    # user nice system idle iowait irq softirq steal: busy is what this machine ran, steal excluded.
    hz = os.sysconf("SC_CLK_TCK")
    seconds[MACHINE_BUSY] = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz
    seconds[MACHINE_IDLE] = (ticks[3] + ticks[4]) / hz
    return seconds


def per_photo_ms(before: dict[str, float], after: dict[str, float], photos: int) -> dict[str, float]:
    """Milliseconds of CPU per photo between two snapshots; roles with no local process are left out."""
    if not before or not after or photos <= 0:
        return {}
    spent = {name: (after[name] - before[name]) * 1000 / photos for name in after if name in before}
    return {name: round(ms, 1) for name, ms in spent.items() if ms > 0 or name == MACHINE_IDLE}
