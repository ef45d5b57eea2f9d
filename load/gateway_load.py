"""A small, bounded load generator for the Veil gateway (asyncio + aiohttp; no locust needed).

Scenarios:
  uploads  the gateway alone: how many uploads per second it accepts (POST /v1/jobs → 202). Jobs are
           queued as usual; to keep the worker's CPU out of the numbers, run it against a gateway whose
           workers are stopped (the queue drains later) or on another machine.
  mixed    what a busy deployment sees: uploads, job polls, health checks and result downloads in the
           proportions given by --mix (default 4:10:1:1), all against one API key.

Bounded in both requests (--requests) and time (--duration); it stops at whichever comes first. Loopback
only unless --allow-remote is given, so a typo cannot load someone else's server.

  .venv/bin/python -m load.gateway_load --api-key $KEY --scenario uploads --requests 500 --duration 30
  .venv/bin/python -m load.gateway_load --url https://veil.example.org --allow-remote \\
      --api-key $KEY --scenario mixed --images ./photos --concurrency 16 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from cli.client import VeilClient, multipart_body

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def tiny_png() -> bytes:
    """A 64x64 grey PNG built without image libraries (the smallest realistic upload)."""
    import struct
    import zlib

    width = height = 64
    raw = b"".join(b"\x00" + bytes([128, 128, 128]) * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[f"{kind} {status}"] += 1


class Run:
    def __init__(self, args: argparse.Namespace, images: list[tuple[str, bytes]]) -> None:
        self.args = args
        # Upload bodies are built once, before the clock starts: the load generator shares the cores.
        self.uploads = [multipart_body(name, data, {}) for name, data in images]
        self.stats = Stats()
        self.issued = 0
        self.deadline = time.monotonic() + args.duration
        self.jobs: list[str] = []  # ids of accepted jobs, for polls
        self.results: list[str] = []  # jobs known to have succeeded
        self.rng = random.Random(args.seed)
        weights = [int(w) for w in args.mix.split(":")]
        self.kinds = ["upload", "poll", "health", "result"]
        self.weights = weights if args.scenario == "mixed" else [1, 0, 0, 0]

    def _take(self) -> bool:
        if self.issued >= self.args.requests or time.monotonic() >= self.deadline:
            return False
        self.issued += 1
        return True

    async def _one(self, api: VeilClient, kind: str) -> None:
        start = time.perf_counter()
        if kind == "poll" and self.jobs:
            job_id = self.rng.choice(self.jobs)
            status, body = await api.job(job_id)
            if body.get("status") == "succeeded":
                self.results.append(job_id)
        elif kind == "result" and self.results:
            status, _ = await api.result(self.rng.choice(self.results))
        elif kind == "health":
            status = await api.health()
        else:
            kind = "upload"
            status, body = await api.submit(*self.rng.choice(self.uploads))
            if status == 202:
                self.jobs.append(body["id"])
        self.stats.record(kind, status, time.perf_counter() - start)

    async def client(self, api: VeilClient) -> None:
        while self._take():
            kind = self.rng.choices(self.kinds, self.weights)[0]
            try:
                await self._one(api, kind)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.statuses[f"{kind} {type(exc).__name__}"] += 1

    async def main(self) -> dict[str, object]:
        timeout = aiohttp.ClientTimeout(total=self.args.request_timeout)
        connector = aiohttp.TCPConnector(limit=self.args.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            api = VeilClient(http, self.args.url, self.args.api_key)
            start = time.perf_counter()
            await asyncio.gather(*(self.client(api) for _ in range(self.args.concurrency)))
            elapsed = time.perf_counter() - start
        summary: dict[str, object] = {
            "scenario": self.args.scenario,
            "url": self.args.url,
            "concurrency": self.args.concurrency,
            "seconds": round(elapsed, 2),
            "requests": self.issued,
            "statuses": dict(self.stats.statuses),
        }
        for kind, values in self.stats.latencies.items():
            ordered = sorted(values)
            summary[kind] = {
                "count": len(values),
                "per_s": round(len(values) / elapsed, 1) if elapsed else 0,
                "p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
            }
        accepted = self.stats.statuses.get("upload 202", 0)
        summary["uploads_accepted_per_s"] = round(accepted / elapsed, 1) if elapsed else 0
        return summary


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m load.gateway_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--scenario", choices=["uploads", "mixed"], default="uploads")
    parser.add_argument("--images", type=Path, default=None, help="upload these (default: a 64x64 PNG)")
    parser.add_argument("--requests", type=int, default=500, help="at most this many requests")
    parser.add_argument("--duration", type=float, default=30.0, help="at most this many seconds")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mix", default="4:10:1:1", help="upload:poll:health:result weights (mixed)")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.duration <= 0 or args.concurrency < 1:
        parser.error("--requests, --duration and --concurrency must be positive")
    if not is_loopback(args.url) and not args.allow_remote:
        parser.error(f"{args.url} is not a loopback address; add --allow-remote to load a remote deployment")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.images:
        files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES)
        images = [(p.name, p.read_bytes()) for p in files]
        if not images:
            print(f"no images in {args.images}", file=sys.stderr)
            return 2
    else:
        images = [("tiny.png", tiny_png())]
    summary = asyncio.run(Run(args, images).main())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
