"""``veil bench`` (b), end-to-end: HTTP upload → S3 → queue → worker → S3 → the answer, against a running
stack, keeping ``concurrency`` jobs in flight."""

from __future__ import annotations

import asyncio
import statistics
import time

from cli import cpuuse
from cli.bench_stats import Phase, summarize
from cli.client import ApiError, VeilClient, multipart_body


async def end_to_end(
    url: str,
    api_key: str,
    images: list[tuple[str, bytes]],
    targets: list[str],
    concurrency: int,
    poll_s: float,
    timeout_s: float,
    wait_s: float = 0.0,
) -> Phase:
    """``wait_s > 0`` asks the gateway to hold the upload's answer until the job finishes (its ``wait``
    option, polled server-side from Redis); jobs still running then are polled over HTTP as usual."""
    import aiohttp

    fields = {"targets": ",".join(targets)}
    if wait_s > 0:
        fields["wait"] = f"{wait_s:g}"
    # Request bodies are built before the clock starts: the load generator shares the service's cores.
    queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
    for name, data in images:
        queue.put_nowait((name, *multipart_body(name, data, fields)))
    latencies: list[float] = []
    worker_ms: list[float] = []
    failures: list[str] = []

    async def one(api: VeilClient, name: str, body: bytes, content_type: str) -> None:
        start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        status, created = await api.submit(body, content_type)
        if status not in (200, 202):
            failures.append(f"{name}: HTTP {status} {created}")
            return
        job = await api.until_finished(created, poll_s, deadline)
        if job is None:
            failures.append(f"{name}: not finished within {timeout_s:g}s")
            return
        if job["status"] != "succeeded":
            failures.append(f"{name}: {job.get('error')}")
            return
        latencies.append(time.perf_counter() - start)
        timings = job.get("timings_ms") or {}
        # Stages only: a source's time (source.*) is part of its class's detect_* stage.
        worker_ms.append(
            sum(v for k, v in timings.items() if isinstance(v, int | float) and not k.startswith("source."))
        )

    async def client(api: VeilClient) -> None:
        while not queue.empty():
            name, body, content_type = queue.get_nowait()
            try:
                await one(api, name, body, content_type)
            except (aiohttp.ClientError, ApiError, TimeoutError, ValueError) as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        api = VeilClient(http, url, api_key)
        cpu = cpuuse.snapshot()
        start = time.perf_counter()
        await asyncio.gather(*(client(api) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        cpu_per_photo = cpuuse.per_photo_ms(cpu, cpuuse.snapshot(), len(images))
    phase = summarize(latencies, elapsed, failed=len(failures))
    phase.extra = {
        "concurrency": concurrency,
        "wait_s": wait_s,
        "worker_p50_ms": round(statistics.median(worker_ms), 1) if worker_ms else 0.0,
        "failures": failures[:5],
        # Over the timed part only (request bodies are built before it); this process is the load generator.
        "cpu_ms_per_photo": cpu_per_photo,
    }
    return phase
