"""Where the CPU goes while ``veil bench`` runs: CPU time of the local service processes, by role (psutil).

(b)'s img/s on one machine is its cores divided by everything a photo costs them: the models, and around
them the gateway, the worker's event loop, the object store, Redis and the load generator itself. Read
per photo beside (a)'s model-only CPU, this shows what the service adds and where. For a remote stack no
local process has a role, and only the bench and the machine are counted.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence

import psutil

# Roles, in the order they are printed. The worker's event loop is its main thread (its lanes and the
# inference runtimes' threads are the rest of the worker).
ROLES = ("worker", "worker event loop", "gateway", "seaweedfs", "redis", "bench")
MACHINE_BUSY = "machine busy"
MACHINE_IDLE = "machine idle"
# The machine's CPU time counters as Linux's /proc/stat orders them (psutil's names); guest time is
# already inside user and nice, so it is left out of every sum.
MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")  # what this machine ran, steal excluded
_IDLE_FIELDS = ("idle", "iowait")

_VEIL_ROLES = {"workers": "worker", "worker": "worker", "gateway": "gateway"}


def role_of(argv: Sequence[str]) -> str | None:
    """The stack role of a process by its command line, as ``veil up``, the deploy files and the
    ``veil worker`` / ``veil gateway`` commands start them."""
    args = [arg for arg in argv if arg]
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


def stack_processes() -> Iterator[tuple[str, psutil.Process]]:
    """This machine's stack processes (other than this one) with their roles, found by command line."""
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline")  # None where it cannot be read (another user's, a zombie)
        role = role_of(argv) if argv else None
        if role is not None and proc.pid != me:
            yield role, proc


def machine_times() -> dict[str, float]:
    """The machine's CPU time counters so far, seconds (:data:`MACHINE_FIELDS` this platform has)."""
    times = psutil.cpu_times()
    return {name: float(getattr(times, name)) for name in MACHINE_FIELDS if hasattr(times, name)}


def machine_split(times: Mapping[str, float]) -> dict[str, float]:
    """Busy (steal excluded: it is not this machine's work) and idle seconds from the counters."""
    return {
        MACHINE_BUSY: sum(times.get(name, 0.0) for name in _BUSY_FIELDS),
        MACHINE_IDLE: sum(times.get(name, 0.0) for name in _IDLE_FIELDS),
    }


def steal_share(before: Mapping[str, float] | None, after: Mapping[str, float] | None) -> float | None:
    """Share of the interval the hypervisor gave this VM's vCPUs to someone else (``steal``). On a shared
    host it can take a large part of the machine, and every img/s measured then is lower by about as much.
    None where the platform has no steal counter."""
    if before is None or after is None or "steal" not in before or "steal" not in after:
        return None
    total = sum(after.get(name, 0.0) - before.get(name, 0.0) for name in MACHINE_FIELDS)
    return round((after["steal"] - before["steal"]) / total, 3) if total > 0 else None


def _seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of one process (its children not included)."""
    times = proc.cpu_times()
    return times.user + times.system


def _main_thread_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process's main thread (the thread whose id is the pid)."""
    return sum(t.user_time + t.system_time for t in proc.threads() if t.id == proc.pid)


def snapshot() -> dict[str, float]:
    """CPU seconds so far: per role (summed over its processes), this process (``bench``: the model loop
    in (a), the load generator in (b)), and the machine's busy and idle time."""
    seconds = dict.fromkeys(ROLES, 0.0)
    seconds["bench"] = _seconds(psutil.Process())
    for role, proc in stack_processes():
        try:
            spent = _seconds(proc)
            loop = _main_thread_seconds(proc) if role == "worker" else 0.0
        except psutil.Error:  # the process ended while we looked, or is not ours to read
            continue
        seconds[role] += spent
        if role == "worker":
            seconds["worker event loop"] += loop
    return {**seconds, **machine_split(machine_times())}


def per_photo_ms(before: Mapping[str, float], after: Mapping[str, float], photos: int) -> dict[str, float]:
    """Milliseconds of CPU per photo between two snapshots; roles with no local process are left out."""
    if not before or not after or photos <= 0:
        return {}
    spent = {name: (after[name] - before[name]) * 1000 / photos for name in after if name in before}
    return {name: round(ms, 1) for name, ms in spent.items() if ms > 0 or name == MACHINE_IDLE}
