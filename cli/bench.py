"""``veil bench``: the model-only loop and the whole service, on the same images, in one run.

(a) model-only: decode + both detectors, as the issue defines it. The worker's own engine (same plan:
providers, lanes, threads, model precisions) runs ``Anonymizer.detect`` on the image bytes in this
process, one lane per core as the worker does; blurring and encoding (a few ms, done in (b)) are not part
of it.
(b) end-to-end: HTTP upload → S3 → queue → worker → S3 → poll, against a running stack, keeping
``--concurrency`` jobs in flight.

Before the first timed round, one image of each distinct size goes through both, untimed: OpenVINO
compiles kernels per input shape, and a worker that has served for a while has them all, so without the
warm-up round 1's (a) would pay for them and (b) would not (or the other way round on a fresh stack).

Reports img/s, p50/p95 latency, the worker's RSS (from its readiness heartbeat in Redis, or /proc for a
local worker), the ratio (b)/(a), and each phase's CPU per photo by process (:mod:`cli.cpuuse`: what the
service costs around the models, when it runs on this machine). Heavy imports happen inside the command.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from cli import cpuuse
from cli.cpuuse import cpu_ticks
from cli.stack import read_stack_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass
class Phase:
    images: int
    seconds: float
    img_per_s: float
    p50_ms: float
    p95_ms: float
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(latencies_s: Sequence[float], seconds: float, failed: int = 0) -> Phase:
    count = len(latencies_s)
    return Phase(
        images=count,
        seconds=round(seconds, 2),
        img_per_s=round(count / seconds, 2) if seconds > 0 else 0.0,
        p50_ms=round(statistics.median(latencies_s) * 1000, 1) if latencies_s else 0.0,
        p95_ms=round(percentile(latencies_s, 95) * 1000, 1),
        failed=failed,
    )


def load_images(directory: Path, limit: int | None) -> list[tuple[str, bytes]]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit:
        files = files[:limit]
    if not files:
        raise click.ClickException(f"no images (jpg, png, webp) in {directory}")
    return [(p.name, p.read_bytes()) for p in files]


def one_per_size(images: list[tuple[str, bytes]], max_pixels: int) -> list[tuple[str, bytes]]:
    """The first image of each distinct upright size (what the models' input shapes follow); images that
    do not decode are left to the timed run, which reports them."""
    from workers.imageops import decode

    seen: set[tuple[int, int]] = set()
    chosen: list[tuple[str, bytes]] = []
    for name, data in images:
        try:
            image = decode(data, max_pixels=max_pixels)
        except Exception:  # any failure here shows up in the timed phases
            continue
        if (image.width, image.height) not in seen:
            seen.add((image.width, image.height))
            chosen.append((name, data))
    return chosen


# -- (a) model-only -----------------------------------------------------------------------------------------


def load_bench_engine(settings: Any) -> Any:
    """The worker's own engine, as the worker would load it on this machine, warmed up."""
    import cv2

    from workers.runtime import cpu_count, load_engine

    engine = load_engine(settings.worker)
    if engine.plan.lanes >= cpu_count():
        cv2.setNumThreads(1)
    engine.warm_up()
    return engine


def model_only(engine: Any, images: list[tuple[str, bytes]], targets: list[str], settings: Any) -> Phase:
    from shared.jobs import BlurOptions, Target
    from workers.main import rss_bytes

    options = BlurOptions(targets=tuple(Target(t) for t in targets))
    timings: dict[str, list[float]] = {}

    def one(data: bytes) -> float:
        start = time.perf_counter()
        result = engine.detect(
            data,
            options,
            max_pixels=settings.limits.max_pixels,
            face_max_side=settings.worker.face_max_side,
        )
        for name, ms in result.timings_ms.items():
            timings.setdefault(name, []).append(ms)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=engine.plan.lanes, thread_name_prefix="bench-lane") as pool:
        cpu = cpuuse.snapshot()
        start = time.perf_counter()
        latencies = list(pool.map(one, [data for _, data in images]))
        elapsed = time.perf_counter() - start
        cpu_per_photo = cpuuse.per_photo_ms(cpu, cpuuse.snapshot(), len(images))
    phase = summarize(latencies, elapsed)
    phase.extra = {
        "plan": engine.plan.describe(),
        "providers": engine.providers,
        "rss_mb": round((rss_bytes() or 0) / 2**20, 1),
        # Median per stage, in ms of one lane (stages of different lanes overlap).
        "stage_p50_ms": {name: round(statistics.median(v), 1) for name, v in timings.items()},
        "stage_share": _shares(timings),
        "cpu_ms_per_photo": cpu_per_photo,
    }
    return phase


def _shares(timings: dict[str, list[float]]) -> dict[str, float]:
    totals = {name: sum(values) for name, values in timings.items()}
    whole = sum(totals.values()) or 1.0
    return {name: round(total / whole, 3) for name, total in totals.items()}


# -- (b) end-to-end -----------------------------------------------------------------------------------------


def multipart_body(filename: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with the image as ``image`` and ``fields`` after it, and its content
    type: what a client's form upload sends, built once per image."""
    boundary = uuid.uuid4().hex
    while boundary.encode() in data:  # practically never; a boundary must not occur in the parts
        boundary = uuid.uuid4().hex
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")  # as browsers do
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data,
        b"\r\n",
    ]
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


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

    headers = {"X-API-Key": api_key}
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

    async def one(http: aiohttp.ClientSession, name: str, body: bytes, content_type: str) -> None:
        start = time.perf_counter()
        upload_headers = {**headers, "Content-Type": content_type}
        async with http.post("/v1/jobs", data=body, headers=upload_headers) as response:
            created = await response.json(content_type=None)
            if response.status not in (200, 202):
                failures.append(f"{name}: HTTP {response.status} {created}")
                return
        job = created
        job_url = f"/v1/jobs/{created['id']}"
        deadline = start + timeout_s
        while job.get("status") not in ("succeeded", "failed"):
            await asyncio.sleep(poll_s)
            async with http.get(job_url, headers=headers) as response:
                job = await response.json(content_type=None)
            if job.get("status") not in ("succeeded", "failed") and time.perf_counter() > deadline:
                failures.append(f"{name}: not finished within {timeout_s:g}s")
                return
        if job["status"] != "succeeded":
            failures.append(f"{name}: {job.get('error')}")
            return
        latencies.append(time.perf_counter() - start)
        timings = job.get("timings_ms") or {}
        worker_ms.append(sum(v for v in timings.values() if isinstance(v, int | float)))

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            name, body, content_type = queue.get_nowait()
            try:
                await one(http, name, body, content_type)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as http:
        cpu = cpuuse.snapshot()
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
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


async def worker_runtime(redis_url: str | None, prefix: str) -> tuple[list[dict[str, Any]], str | None]:
    """Ready workers' heartbeats (provider, plan, RSS), or why they could not be read."""
    if not redis_url:
        return [], "no Redis URL"
    from redis.asyncio import Redis

    from shared.readiness import ready_workers

    redis = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        return [w.model_dump() for w in await ready_workers(redis, prefix)], None
    except Exception as exc:  # unreachable Redis, or heartbeats of another version: RSS falls back to /proc
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        await redis.aclose()


def local_worker_rss() -> list[int]:
    """RSS of local worker processes (``python -m workers``, ``veil worker``; fallback without Redis)."""
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if cpuuse.role_of(argv) == "worker":
                pages = int((proc / "statm").read_text().split()[1])
                found.append(pages * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, IndexError):
            continue
    return found


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the interval the hypervisor gave this VM's vCPUs to someone else (``steal``). On a shared
    host it can take a large part of the machine, and every img/s measured then is lower by about as much."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return round(delta[7] / total, 3) if total > 0 else None


def phase_order(number: int) -> tuple[str, str]:
    """(a) then (b) in odd rounds, (b) then (a) in even ones: the host's speed drifts over minutes, and a
    fixed order would hand that drift to one phase every round (in pairs of rounds it cancels)."""
    return ("a", "b") if number % 2 else ("b", "a")


def counted_rounds(per_round: list[dict[str, float]], max_steal: float) -> list[dict[str, float]]:
    """The rounds the medians are taken over: those in which neither phase lost more than ``max_steal`` of
    the CPU to the hypervisor, or all of them when none stayed under it. Steal that hits one phase and not
    the other moves the ratio either way (0.3 to 1.3 seen here), so such rounds tell nothing about it."""
    quiet = [r for r in per_round if max(r.get("steal_a", 0.0), r.get("steal_b", 0.0)) <= max_steal]
    return quiet or per_round


def _note_busy(this: dict[str, float], key: str, phase: Phase) -> None:
    """A round's machine-wide CPU per photo (ms) for one phase, where /proc tells it."""
    busy = phase.extra["cpu_ms_per_photo"].get(cpuuse.MACHINE_BUSY)
    if busy is not None:
        this[key] = busy


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg": [round(v, 2) for v in load],
    }


@click.command()
@click.option(
    "--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option("--limit", type=int, default=None, help="Use the first N images (sorted by name).")
@click.option("--targets", default="faces,plates", show_default=True)
@click.option("--concurrency", type=int, default=8, show_default=True, help="Jobs in flight in (b).")
@click.option("--url", default=None, help="Gateway URL (default: the stack `veil up` runs in --data-dir).")
@click.option("--api-key", envvar="VEIL_API_KEY", default=None, help="Or VEIL_API_KEY.")
@click.option("--skip-model", is_flag=True, help="Only (b), e.g. against a remote deployment.")
@click.option("--skip-service", is_flag=True, help="Only (a).")
@click.option(
    "--poll",
    "poll_s",
    type=float,
    default=0.2,
    show_default=True,
    help="Job poll interval, s (polls cost the service CPU too; latency is measured to this resolution).",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Ask the gateway to answer the upload when the job is done (0: poll only).",
)
@click.option("--timeout", "timeout_s", type=float, default=120.0, show_default=True)
@click.option(
    "--rounds",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    help="Alternate (a) and (b) this many times; the ratio is the median of each round's (b)/(a), so "
    "a machine whose speed drifts (shared hosts) weighs on both alike.",
)
@click.option(
    "--max-steal",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="With --rounds: rounds where either phase lost more than this share of CPU time to the "
    "hypervisor (steal) are shown, but left out of the medians while any round stayed under it.",
)
@click.option(
    "--warm-up/--no-warm-up",
    default=True,
    show_default=True,
    help="Before timing, send one image of each distinct size through (a) and (b) untimed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.pass_obj
def bench(
    data_dir: Path,
    images_dir: Path,
    limit: int | None,
    targets: str,
    concurrency: int,
    url: str | None,
    api_key: str | None,
    skip_model: bool,
    skip_service: bool,
    poll_s: float,
    wait_s: float,
    timeout_s: float,
    rounds: int,
    max_steal: float,
    warm_up: bool,
    as_json: bool,
) -> None:
    """Measure (a) the model-only loop and (b) end-to-end through the service on the same images."""
    from cli.main import settings_for_cli

    settings = settings_for_cli(data_dir)
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    if not wanted or any(t not in ("faces", "plates") for t in wanted):
        raise click.ClickException("--targets takes faces, plates or faces,plates")
    images = load_images(images_dir, limit)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "images": len(images),
        "targets": wanted,
        "machine_before": _machine(),
    }
    say = (lambda *_: None) if as_json else click.echo
    if not skip_service:
        url = url or read_stack_file(data_dir).get("url")
        if not url or not api_key:
            raise click.ClickException("(b) needs --url (or a `veil up` stack in --data-dir) and --api-key")
    engine = None if skip_model else load_bench_engine(settings)
    per_round: list[dict[str, float]] = []
    try:
        if warm_up:
            warm = one_per_size(images, settings.limits.max_pixels)
            report["warm_up_images"] = len(warm)
            say(f"warm-up: {len(warm)} images, one per distinct size, untimed …")
            if engine is not None:
                model_only(engine, warm, wanted, settings)
            if url and api_key and not skip_service:
                asyncio.run(end_to_end(url, api_key, warm, wanted, concurrency, poll_s, timeout_s, wait_s))

        def run_model_only(number: int, this: dict[str, float]) -> None:
            assert engine is not None
            say(f"round {number}/{rounds} (a) model-only: {len(images)} images …")
            ticks = cpu_ticks()
            phase = model_only(engine, images, wanted, settings)
            phase.extra["cpu_steal"] = steal_share(ticks, cpu_ticks())
            report["model_only"] = asdict(phase)
            this["model_only"] = phase.img_per_s
            this["steal_a"] = phase.extra["cpu_steal"] or 0.0
            _note_busy(this, "cpu_a", phase)

        def run_end_to_end(number: int, this: dict[str, float]) -> None:
            assert url is not None and api_key is not None
            say(f"round {number}/{rounds} (b) end-to-end via {url}, concurrency {concurrency} …")
            ticks = cpu_ticks()
            e2e = asyncio.run(
                end_to_end(url, api_key, images, wanted, concurrency, poll_s, timeout_s, wait_s)
            )
            e2e.extra["cpu_steal"] = steal_share(ticks, cpu_ticks())
            report["end_to_end"] = asdict(e2e)
            this["end_to_end"] = e2e.img_per_s
            this["steal_b"] = e2e.extra["cpu_steal"] or 0.0
            _note_busy(this, "cpu_b", e2e)

        for number in range(1, rounds + 1):
            this: dict[str, float] = {}
            for name in phase_order(number):
                if name == "a" and engine is not None:
                    run_model_only(number, this)
                if name == "b" and url and api_key and not skip_service:
                    run_end_to_end(number, this)
            if this.get("model_only") and this.get("end_to_end"):
                this["ratio"] = round(this["end_to_end"] / this["model_only"], 3)
            per_round.append(this)
    finally:
        if engine is not None:
            engine.close()
    counted = per_round
    if rounds > 1:
        report["rounds"] = per_round
        counted = counted_rounds(per_round, max_steal)
        report["rounds_counted"] = len(counted)
        report["max_steal"] = max_steal
        for key in ("model_only", "end_to_end"):
            if key in report:
                report[key]["img_per_s"] = round(statistics.median(r[key] for r in counted), 2)
    ratios = [r["ratio"] for r in counted if "ratio" in r]
    if ratios:
        report["ratio"] = round(statistics.median(ratios), 3)
        every = [r["ratio"] for r in per_round if "ratio" in r]
        report["ratio_all_rounds"] = round(statistics.median(every), 3)
    if "end_to_end" in report:
        workers, problem = asyncio.run(worker_runtime(settings.redis.url, settings.redis.prefix))
        if problem:
            report["workers_error"] = problem
        report["workers"] = [
            {
                "id": w["id"],
                "providers": w["providers"],
                "runtime": w.get("runtime"),
                "rss_bytes": w.get("rss_bytes"),
            }
            for w in workers
        ]
        rss = [w["rss_bytes"] for w in workers if w.get("rss_bytes")] or local_worker_rss()
        report["worker_rss_mb"] = [round(v / 2**20, 1) for v in rss]
    report["machine_after"] = _machine()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)


def _cpu_line(cpu: dict[str, float], phase: str) -> str:
    """One phase's CPU per photo by role, as ``name value`` pairs, for the text report."""
    names = {"bench": "bench (the model loop)" if phase == "model_only" else "bench (load generator)"}
    parts = [f"{names.get(name, name)} {ms:g}" for name, ms in cpu.items()]
    return " · ".join(parts)


def _service_cpu(report: dict[str, Any]) -> float | None:
    """(b)'s machine-wide CPU per photo minus (a)'s: what the service adds around the models."""
    try:
        busy_b = float(report["end_to_end"]["extra"]["cpu_ms_per_photo"][cpuuse.MACHINE_BUSY])
        busy_a = float(report["model_only"]["extra"]["cpu_ms_per_photo"][cpuuse.MACHINE_BUSY])
    except KeyError:
        return None
    return round(busy_b - busy_a, 1)


def _print(report: dict[str, Any]) -> None:
    click.echo(f"\n{report['date']}  {report['images']} images  targets={','.join(report['targets'])}")
    before, after = report["machine_before"], report.get("machine_after", {})
    click.echo(
        f"machine: {before['cores']} cores, loadavg before {before['loadavg']} after {after.get('loadavg')}"
    )
    for key, title in (("model_only", "(a) model-only"), ("end_to_end", "(b) end-to-end")):
        phase = report.get(key)
        if not phase:
            continue
        extra = phase.get("extra", {})
        steal = extra.get("cpu_steal")
        click.echo(
            f"{title:16} {phase['img_per_s']:7.2f} img/s  p50 {phase['p50_ms']:8.1f} ms  "
            f"p95 {phase['p95_ms']:8.1f} ms  ({phase['images']} ok, {phase['failed']} failed, "
            f"{phase['seconds']} s{'' if steal is None else f', CPU steal {steal:.0%}'})"
        )
        if key == "model_only":
            click.echo(f"    providers: {', '.join(extra['providers'])}  plan: {extra['plan']}")
            click.echo(f"    stages p50 ms: {extra['stage_p50_ms']}  share of time: {extra['stage_share']}")
            click.echo(f"    bench process RSS: {extra['rss_mb']} MB")
        else:
            click.echo(
                f"    concurrency {extra['concurrency']}, server-side wait {extra['wait_s']:g} s, "
                f"worker time p50 {extra['worker_p50_ms']} ms"
            )
            for failure in extra.get("failures", []):
                click.echo(f"    failure: {failure}")
        if extra.get("cpu_ms_per_photo"):
            click.echo(f"    CPU per photo, ms: {_cpu_line(extra['cpu_ms_per_photo'], key)}")
    around = _service_cpu(report)
    if around is not None:
        click.echo(
            f"the service around the models: {around} ms of CPU per photo "
            "((b)'s machine busy minus (a)'s; the ratio is about (a)'s over (b)'s)"
        )
    for worker in report.get("workers", []):
        click.echo(f"worker {worker['id']}: providers {worker['providers']} runtime {worker['runtime']}")
    if "worker_rss_mb" in report:
        click.echo(f"worker RSS: {report['worker_rss_mb']} MB")
    for number, this in enumerate(report.get("rounds", []), start=1):
        click.echo(f"round {number}: {this}")
    if "ratio" in report:
        if "rounds" not in report:
            click.echo(f"ratio (b)/(a): {report['ratio']}")
        else:
            counted_n, all_n = report["rounds_counted"], len(report["rounds"])
            which = (
                f"{counted_n} of {all_n} rounds with steal ≤ {report['max_steal']:.0%}"
                if counted_n < all_n
                else f"all {all_n} rounds"
            )
            click.echo(
                f"ratio (b)/(a): median of {which}: {report['ratio']} "
                f"(of all rounds: {report['ratio_all_rounds']})"
            )
