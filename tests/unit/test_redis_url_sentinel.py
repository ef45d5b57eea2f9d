"""A ``redis+sentinel://`` URL against a real Sentinel (``redis-server --sentinel``, the same binary Veil
runs) watching the session's Redis: the one factory's clients, arq's queue and arq's own settings all
reach the master it names."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq import create_pool
from redis.asyncio import Redis

from cli.embedded import RedisServer, find_redis_server, free_port, popen_logged
from shared.queue import arq_redis_settings, open_pool
from shared.redisconn import redis_client
from shared.settings import RedisSettings

pytestmark = pytest.mark.integration

SERVICE = "veil-test-master"
DB = 6  # nobody else's


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def sentinel_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("sentinel")
    port = free_port()
    conf = folder / "sentinel.conf"  # Sentinel rewrites its config file: it must be its own, writable
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {redis_server.port} 1\n"
    )
    proc = popen_logged([find_redis_server(), str(conf), "--sentinel"], folder / "sentinel.log", Path(folder))
    try:
        deadline = time.monotonic() + 15
        while not _answers(port):
            assert proc.poll() is None, (folder / "sentinel.log").read_text()
            assert time.monotonic() < deadline, "the sentinel did not answer within 15 s"
            time.sleep(0.05)
        yield f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/{DB}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_the_factorys_client_reaches_the_master_the_sentinel_names(
    sentinel_url: str, redis_server: RedisServer
) -> None:
    key = f"sentinel-test:{uuid.uuid4().hex}"
    through_sentinel = redis_client(sentinel_url, socket_timeout=5)
    direct = Redis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{DB}")
    try:
        await through_sentinel.set(key, b"found", ex=60)
        assert await direct.get(key) == b"found"  # the master, database 6
    finally:
        await through_sentinel.aclose()
        await direct.aclose()


async def test_the_queue_and_arqs_own_settings_reach_it_too(sentinel_url: str) -> None:
    settings = RedisSettings(url=sentinel_url, queue_name=f"veil:sentinel-test:{uuid.uuid4().hex[:8]}")
    pool = await open_pool(settings)
    arq = await create_pool(arq_redis_settings(settings))  # what a Worker built without a pool uses
    try:
        job = await pool.enqueue_job("anonymize", {"id": "x"}, _queue_name=settings.queue_name)
        assert job is not None
        assert await arq.zcard(settings.queue_name) == 1
    finally:
        await pool.delete(settings.queue_name)
        await pool.aclose()
        await arq.aclose()
