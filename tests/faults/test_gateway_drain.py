"""SIGTERM drains a gateway process (gateway/drain.py): /readyz answers 503 ``draining`` at once while
requests are still served for ``VEIL_GATEWAY__SHUTDOWN_DELAY_SECONDS``; then the listener closes, an
open request still finishes (202), and the process exits 0. A second signal stops it at once.
The real ``python -m gateway`` against the session's Redis and SeaweedFS."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli.embedded import child_env, free_port, popen_logged
from shared.apikeys import ApiKeyStore
from shared.redisconn import redis_client

pytestmark = pytest.mark.integration

BOUNDARY = "veil-drain-test"
REDIS_DB = "4"  # its own database: the jobs this queues are nobody else's


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    key: str
    log: Path

    def readyz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def printed(self) -> str:
        return self.log.read_text(errors="replace")


async def _create_key(redis_url: str) -> str:
    redis = redis_client(redis_url)
    try:
        token, _ = await ApiKeyStore(redis, "veil").create("drain")
        return token
    finally:
        await redis.aclose()


@pytest.fixture
def gateway(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Gateway]:
    port = free_port()
    redis_url = stack_env["VEIL_REDIS__URL"].rsplit("/", 1)[0] + "/" + REDIS_DB
    env = {
        **stack_env,
        "VEIL_REDIS__URL": redis_url,
        "VEIL_GATEWAY__PORT": str(port),
        "VEIL_GATEWAY__SHUTDOWN_DELAY_SECONDS": "2",
        "VEIL_GATEWAY__DRAIN_SECONDS": "20",
    }
    log = tmp_path / "gateway.log"
    proc = popen_logged([sys.executable, "-m", "gateway"], log, Path.cwd(), env=child_env(env))
    try:
        gw = Gateway(proc, port, asyncio.run(_create_key(redis_url)), log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, gw.printed()
                assert time.monotonic() < deadline, f"the gateway did not answer within 60 s\n{gw.printed()}"
                time.sleep(0.1)
        yield gw
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _waiting_upload(gw: Gateway, wait: float) -> socket.socket:
    """An upload that asks to wait ``wait`` s for its job (api4ai's ``wait``; no worker runs it here): the
    gateway has the whole request and holds it open in its handler."""
    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 127, np.uint8))
    assert ok
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="wait"\r\n\r\n{wait}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.tobytes()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {gw.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    sock.sendall(head + body)
    time.sleep(0.5)  # in the handler, waiting for the job
    return sock


def _answer(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_turns_readyz_503_then_stops_listening_and_finishes_the_open_upload(gateway: Gateway) -> None:
    status, before = gateway.readyz()
    assert before["draining"] is False, before
    sock = _waiting_upload(gateway, wait=5)
    with sock:
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, during = gateway.readyz()  # still listening during the shutdown delay
        assert (status, during["status"], during["draining"]) == (503, "not_ready", True), during
        deadline = time.monotonic() + 10
        while not _refused(gateway.port):  # after the 2 s delay: no new connections
            assert time.monotonic() < deadline, "still accepting connections 10 s after SIGTERM"
            time.sleep(0.1)
        assert gateway.proc.poll() is None, "exited with a request still open"
        reply = _answer(sock)
    assert reply.startswith(b"HTTP/1.1 202"), (reply[:300], gateway.printed()[-3000:])
    assert b'"status":"queued"' in reply.replace(b" ", b""), reply[-300:]
    assert gateway.proc.wait(30) == 0, gateway.printed()
    assert "SIGTERM: draining" in gateway.printed()


def test_a_second_signal_stops_the_gateway_at_once(gateway: Gateway) -> None:
    sock = _waiting_upload(gateway, wait=20)
    with sock:
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        gateway.proc.send_signal(signal.SIGINT)
        assert gateway.proc.wait(10) == 0, gateway.printed()  # not the 2 s delay + 20 s drain
        assert _answer(sock) == b""  # the open request was cut, unanswered
    assert "stopped at once by a second signal" in gateway.printed()
