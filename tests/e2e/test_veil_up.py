"""`veil up` as a newcomer runs it: the whole stack comes up, a key is created with `veil keys create`,
a photo is blurred, and Ctrl-C stops every process it started."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest

from cli.embedded import free_port
from tests.images import astronaut_bgr

pytestmark = [pytest.mark.integration, pytest.mark.models]

VEIL = [sys.executable, "-m", "cli.main"]


def _veil(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VEIL, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _unix_socket_paths(pid: int) -> set[str]:
    """Paths of the Unix sockets process ``pid`` holds open (its fds' inodes looked up in /proc/net/unix)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes:
            paths.add(fields[7])
    return paths


def _multipart(field: str, filename: str, body: bytes) -> tuple[bytes, str]:
    boundary = "veil-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_veil_up_runs_the_stack_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "veil"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    up = subprocess.Popen(
        [*VEIL, "--data-dir", str(data_dir), "up", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert up.stdout is not None
        banner = ""
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in banner:
            line = up.stdout.readline()
            assert line, f"veil up exited early:\n{banner}"
            banner += line
            assert time.monotonic() < deadline, banner
        assert f"http://127.0.0.1:{port}" in banner
        assert "veil keys create" in banner
        assert re.search(rf"Demo: +http://127\.0\.0\.1:{port}/demo#key=\S+", banner), banner

        created = _veil(data_dir, "keys", "create", "--name", "me")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("veil_")

        ok, jpeg = cv2.imencode(".jpg", astronaut_bgr())
        assert ok
        body, content_type = _multipart("image", "astronaut.jpg", jpeg.tobytes())
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/jobs",
            data=body,
            headers={"X-API-Key": key, "Content-Type": content_type},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            job_id = json.loads(response.read())["id"]
        job: dict[str, object] = {}
        for _ in range(300):
            poll = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/jobs/{job_id}", headers={"X-API-Key": key}
            )
            with urllib.request.urlopen(poll, timeout=10) as response:
                job = json.loads(response.read())
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded", job

        # SeaweedFS's own log files stay inside the data dir (by default they would pile up in /tmp).
        assert list((data_dir / "seaweedfs" / "logs").glob("weed.*INFO*"))
        stack = json.loads((data_dir / "stack.json").read_text())
        assert stack["url"] == f"http://127.0.0.1:{port}"
        children = subprocess.run(
            ["pgrep", "-f", str(data_dir)], capture_output=True, text=True, check=False
        ).stdout.split()
        weed = [pid for pid in children if "weed" in Path(f"/proc/{pid}/cmdline").read_text()]
        weed_sockets = set().union(*(_unix_socket_paths(int(pid)) for pid in weed))
        assert any(path.startswith("/tmp/seaweedfs-s3-") for path in weed_sockets), weed_sockets
        for pid in weed:  # one Go thread per 4 cores (at least 1) unless the caller set GOMAXPROCS
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert any(var.startswith(b"GOMAXPROCS=") for var in environ)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(90)
    assert up.returncode == 0
    # Every process it started (redis, weed with data under data_dir) is gone, and the stack file too.
    assert not [pid for pid in children if _pid_alive(int(pid))]
    assert not (data_dir / "stack.json").exists()
    # weed leaves its Unix sockets in /tmp, one set per run; the stack removes them once weed is gone.
    assert not [path for path in weed_sockets if os.path.exists(path)]
