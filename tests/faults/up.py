"""A real `veil up` for fault tests: started as a user starts it (own data dir, free port, no VEIL_* from the
caller's environment), with a key made by `veil keys create`, and ways to find, stop and kill its children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import redis

from cli.embedded import free_port
from shared.jobs import JobRecord
from shared.settings import RedisSettings
from tests.images import BGRImage

VEIL = [sys.executable, "-m", "cli.main"]
CHILD_NAMES = ("redis", "seaweedfs", "worker", "gateway")


def _veil(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VEIL, "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _child_name(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile
        return None
    if b"redis-server" in argv[0]:  # redis rewrites its title to "<path> 127.0.0.1:<port>"
        return "redis"
    if Path(argv[0].decode()).name == "weed":
        return "seaweedfs"
    for name, module in (("worker", b"workers"), ("gateway", b"gateway")):
        if argv[1:3] == [b"-m", module]:
            return name
    return None


@dataclass
class VeilUp:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    output: Path  # what `veil up` printed (stdout and stderr)
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def printed(self) -> str:
        return self.output.read_text(errors="replace")

    def children(self) -> dict[str, int]:
        """PIDs of `veil up`'s children by role (redis, seaweedfs, worker, gateway)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        pids = {}
        for pid in map(int, found.stdout.split()):
            name = _child_name(pid)
            if name is not None:
                pids[name] = pid
        return pids

    def wait_for_children(
        self, what: str, done: Callable[[dict[str, int]], bool], timeout: float = 120
    ) -> dict[str, int]:
        """Poll the children until ``done(children)`` holds, failing with ``what`` and the output after
        ``timeout`` s (or at once if `veil up` itself exited)."""
        deadline = time.monotonic() + timeout
        while True:
            children = self.children()
            if done(children):
                return children
            assert self.proc.poll() is None, f"veil up exited ({self.proc.returncode}):\n{self.printed()}"
            assert time.monotonic() < deadline, (
                f"{what} within {timeout:.0f}s; children {children}\n{self.printed()}"
            )
            time.sleep(0.2)

    def redis_client(self) -> redis.Redis:
        stack = json.loads((self.data_dir / "stack.json").read_text())
        return redis.Redis.from_url(stack["VEIL_REDIS__URL"])

    def submit(self, image: BGRImage, name: str) -> str:
        ok, jpeg = cv2.imencode(".jpg", image)
        assert ok
        boundary = "veil-fault-test"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + jpeg.tobytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{self.url}/v1/jobs",
            data=body,
            headers={"X-API-Key": self.key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
            job_id: str = json.loads(response.read())["id"]
            return job_id

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` with the key, following redirects (a result's 302 to its presigned URL)."""
        request = urllib.request.Request(f"{self.url}{path}", headers={"X-API-Key": self.key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def records(self, client: redis.Redis, job_ids: list[str]) -> dict[str, JobRecord | None]:
        """Job records as the worker wrote them (with ``attempts``, which the API does not show)."""
        prefix = RedisSettings().prefix
        raws = cast(list[bytes | None], client.mget([f"{prefix}:job:{job_id}" for job_id in job_ids]))
        return {
            job_id: None if raw is None else JobRecord.model_validate_json(raw)
            for job_id, raw in zip(job_ids, raws, strict=True)
        }

    def wait_finished(
        self, client: redis.Redis, job_ids: list[str], timeout: float
    ) -> dict[str, JobRecord | None]:
        """Poll the records until every job has finished; fail with their statuses after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        records: dict[str, JobRecord | None] = {}
        while True:
            with contextlib.suppress(redis.ConnectionError):  # Redis may be starting again
                records = self.records(client, job_ids)
                if all(r is not None and r.status.finished for r in records.values()):
                    return records
            if time.monotonic() >= deadline:
                statuses = {
                    k: None if r is None else (r.status.value, r.attempts) for k, r in records.items()
                }
                raise AssertionError(f"jobs not finished within {timeout:.0f}s: {statuses}\n{self.printed()}")
            time.sleep(0.2)


@contextlib.contextmanager
def veil_up(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[VeilUp]:
    """`veil up` in ``tmp_path``, up and with a key; stopped with Ctrl-C at the end (which must exit 0)."""
    data_dir = tmp_path / "veil"
    output = tmp_path / "up.out"
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [*VEIL, "--data-dir", str(data_dir), "up", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
        )
    up = VeilUp(proc, data_dir, port, output)
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C" not in up.printed():
            assert proc.poll() is None, f"veil up exited early:\n{up.printed()}"
            assert time.monotonic() < deadline, f"veil up not up within 180s:\n{up.printed()}"
            time.sleep(0.2)
        created = _veil(data_dir, "keys", "create", "--name", "faults")
        assert created.returncode == 0, created.stderr
        up.key = created.stdout.strip().splitlines()[-1]
        yield up
    finally:
        for pid in up.children().values():  # a child a test left stopped could not stop itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
    assert proc.returncode == 0, up.printed()
