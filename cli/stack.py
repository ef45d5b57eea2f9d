"""``veil up``: the whole stack on one machine — Redis, SeaweedFS, the gateway and one worker.

Children run in their own process groups, supervised (:mod:`cli.supervisor`): once the stack is up, a child
that exits is started again where it was, with backoff, and the others keep running. Ctrl-C (or SIGTERM)
stops them in reverse order. The URLs of the running stack are written to ``<data_dir>/stack.json`` so
other ``veil`` commands find it. Once it is ready it prints a link to the web demo carrying a key of its
own that expires after an hour (:data:`DEMO_KEY_TTL_SECONDS`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType

from redis.exceptions import RedisError

from cli.embedded import (
    EmbeddedError,
    Service,
    child_env,
    free_port,
    popen_logged,
    s3_environment,
    seaweed_ports,
    start_redis,
    start_seaweed,
)
from cli.supervisor import GaveUp, Supervisor
from shared.apikeys import ApiKeyStore
from shared.redisconn import redis_client
from shared.settings import load_settings

STACK_FILE = "stack.json"
# The demo link's key: long enough to try the page, short enough that a link left in a terminal's
# scrollback or a browser's history soon opens nothing.
DEMO_KEY_TTL_SECONDS = 3600


def read_stack_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / STACK_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def stack_environment(data_dir: Path) -> dict[str, str]:
    """``VEIL_*`` variables of a stack started by ``veil up`` in ``data_dir`` (empty if none)."""
    return {k: v for k, v in read_stack_file(data_dir).items() if k.startswith("VEIL_")}


VEIL_PROCESSES = (("worker", "workers"), ("gateway", "gateway"))
# The default drain (VEIL_WORKER__DRAIN_SECONDS, VEIL_GATEWAY__DRAIN_SECONDS: 25 s) and time to exit.
VEIL_STOP_SECONDS = 35.0


def start_veil_process(name: str, module: str, env: dict[str, str], log_dir: Path) -> Service:
    """Start ``python -m <module>`` with ``VEIL_*`` env, logging to ``<log_dir>/<name>.log``."""
    log = log_dir / f"{name}.log"
    proc = popen_logged([sys.executable, "-m", module], log, Path.cwd(), env=child_env(env))
    return Service(name, proc, log, stop_seconds=VEIL_STOP_SECONDS)


def start_veil_processes(env: dict[str, str], log_dir: Path) -> list[Service]:
    """Start a worker and a gateway (``python -m workers``, ``python -m gateway``) with ``VEIL_*`` env."""
    return [start_veil_process(name, module, env, log_dir) for name, module in VEIL_PROCESSES]


def wait_ready(url: str, timeout: float, services: list[Service]) -> None:
    """Wait for ``/readyz`` to answer 200; fail early, with the log's tail, if a process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            if service.proc.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise EmbeddedError(f"{service.name} exited with code {service.proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise EmbeddedError(f"the stack was not ready within {timeout:.0f}s; see the logs in the data dir")


async def create_demo_key(redis_url: str, prefix: str, ttl_seconds: int = DEMO_KEY_TTL_SECONDS) -> str:
    """A new API key named ``demo`` that expires after ``ttl_seconds``; returns the token."""
    redis = redis_client(redis_url)
    try:
        token, _key = await ApiKeyStore(redis, prefix).create("demo", ttl_seconds=ttl_seconds)
    finally:
        await redis.aclose()
    return token


def demo_link(url: str, token: str) -> str:
    """The web demo with its key in the fragment: browsers never send a fragment to the server."""
    return f"{url}/demo#key={token}"


@dataclass
class Stack:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    supervisor: Supervisor = field(default_factory=Supervisor)
    redis_url: str = ""  # set by start()

    @property
    def url(self) -> str:
        # A wildcard bind is reached on loopback from this machine.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def services(self) -> list[Service]:
        return self.supervisor.services

    def start(self, ready_timeout: float = 180.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Ports chosen once: a server the supervisor starts again comes back where it was, on the same data.
        redis_dir, seaweed_dir = self.data_dir / "redis", self.data_dir / "seaweedfs"
        redis = self.supervisor.start("redis", partial(start_redis, redis_dir, port=free_port()))
        start_weed = partial(start_seaweed, seaweed_dir, ports=seaweed_ports())
        seaweed = self.supervisor.start("seaweedfs", start_weed)
        self.redis_url = redis.url
        env = {
            "VEIL_REDIS__URL": redis.url,
            **s3_environment(seaweed),
            "VEIL_GATEWAY__HOST": self.host,
            "VEIL_GATEWAY__PORT": str(self.port),
        }
        for name, module in VEIL_PROCESSES:
            self.supervisor.start(name, partial(start_veil_process, name, module, env, self.data_dir))
        (self.data_dir / STACK_FILE).write_text(json.dumps({**env, "url": self.url}, indent=2))
        wait_ready(self.url, ready_timeout, self.services)

    def demo_link(self) -> str:
        """A link to the web demo with a fresh key valid for :data:`DEMO_KEY_TTL_SECONDS`."""
        # The children read the same environment: the key lands under the prefix the gateway reads.
        prefix = load_settings().redis.prefix
        return demo_link(self.url, asyncio.run(create_demo_key(self.redis_url, prefix)))

    def stop(self) -> None:
        self.supervisor.stop()
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)

    def wait(self) -> int:
        """Supervise the children until a signal arrives; returns the exit code for ``veil up`` (0, or 1
        when a child kept exiting and was given up on)."""
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopping:
            try:
                self.supervisor.check()
            except GaveUp:
                return 1
            time.sleep(0.5)
        return 0


def run_up(data_dir: Path, host: str, port: int) -> int:
    stack = Stack(data_dir=data_dir, host=host, port=port)
    print(f"Starting Veil in {data_dir} (Redis, SeaweedFS S3, gateway, worker)…", flush=True)
    try:
        stack.start()
    except (EmbeddedError, OSError, subprocess.SubprocessError) as exc:
        print(f"veil up failed: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    except KeyboardInterrupt:
        stack.stop()
        return 130
    try:
        demo = f"{stack.demo_link()}   (its key expires in {DEMO_KEY_TTL_SECONDS // 60} min)"
    except (RedisError, OSError) as exc:
        demo = f"unavailable: could not create a demo key ({exc})"
    print(
        f"\nVeil is up at {stack.url}\n"
        f"  Demo:                {demo}\n"
        f"  Create an API key:   .venv/bin/veil keys create --name me\n"
        f'  Blur a photo:        curl -H "X-API-Key: $KEY" -F image=@photo.jpg {stack.url}/v1/jobs\n'
        f"  Logs:                {data_dir}/*.log\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        code = stack.wait()
    finally:
        print("Stopping…", flush=True)
        stack.stop()
    return code
