"""``veil bench``: the model-only loop and the whole service, on the same images, in one run.

(a) model-only (:mod:`cli.bench_model`): decode + both detectors in this process, with the worker's own
engine. (b) end-to-end (:mod:`cli.bench_service`): HTTP upload → S3 → queue → worker → S3, against a
running stack, keeping ``--concurrency`` jobs in flight.

Before the first timed round, one image of each distinct size goes through both, untimed: OpenVINO
compiles kernels per input shape, and a worker that has served for a while has them all, so without the
warm-up round 1's (a) would pay for them and (b) would not (or the other way round on a fresh stack).

Reports img/s, p50/p95 latency, the worker's RSS (:mod:`cli.bench_workers`: from its readiness heartbeat
in Redis, or the local worker process), the ratio (b)/(a) (:mod:`cli.bench_stats`), and each phase's CPU
per photo by process (:mod:`cli.cpuuse`: what the service costs around the models, when it runs on this
machine); :mod:`cli.bench_report` prints it. Heavy imports happen inside the command.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cli import cpuuse
from cli.bench_model import load_bench_engine, model_only, one_per_size
from cli.bench_report import print_report
from cli.bench_service import end_to_end
from cli.bench_stats import Phase, medians, phase_order, round_ratio
from cli.bench_video import print_video_report, video_bench
from cli.bench_workers import workers_report
from cli.common import api_key_option, settings_for_cli, stack_url

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
PHASE_KEYS = {"a": "model_only", "b": "end_to_end"}  # a round's phases, and their keys in the report


def load_images(directory: Path, limit: int | None) -> list[tuple[str, bytes]]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit:
        files = files[:limit]
    if not files:
        raise click.ClickException(f"no images (jpg, png, webp) in {directory}")
    return [(p.name, p.read_bytes()) for p in files]


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg": [round(v, 2) for v in load],
    }


def _note_phase(this: dict[str, float], name: str, phase: Phase, steal: float | None) -> None:
    """A round's figures for phase ``name`` (``a`` or ``b``): img/s, steal share and, where this machine's
    CPU counters tell it, its machine-wide CPU per photo (ms)."""
    phase.extra["cpu_steal"] = steal
    this[PHASE_KEYS[name]] = phase.img_per_s
    this[f"steal_{name}"] = steal or 0.0
    busy = phase.extra["cpu_ms_per_photo"].get(cpuuse.MACHINE_BUSY)
    if busy is not None:
        this[f"cpu_{name}"] = busy


@click.command()
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--video",
    "video_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead of --images: one video through the worker's video pipeline in this process.",
)
@click.option(
    "--detect-every-n",
    type=click.IntRange(1, 30),
    default=None,
    help="With --video: search every Nth frame (default: VEIL_VIDEO__DETECT_EVERY_N).",
)
@click.option("--limit", type=int, default=None, help="Use the first N images (sorted by name).")
@click.option("--targets", default="faces,plates", show_default=True)
@click.option("--concurrency", type=int, default=8, show_default=True, help="Jobs in flight in (b).")
@click.option("--url", default=None, help="Gateway URL (default: the stack `veil up` runs in --data-dir).")
@api_key_option("Or VEIL_API_KEY.")
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
    images_dir: Path | None,
    video_file: Path | None,
    detect_every_n: int | None,
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
    settings = settings_for_cli(data_dir)
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    if not wanted or any(t not in ("faces", "plates") for t in wanted):
        raise click.ClickException("--targets takes faces, plates or faces,plates")
    if video_file is not None:
        print_video_report(video_bench(settings, video_file, wanted, detect_every_n), as_json)
        return
    if images_dir is None:
        raise click.ClickException("give --images DIR (or --video FILE)")
    images = load_images(images_dir, limit)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "images": len(images),
        "targets": wanted,
        "machine_before": _machine(),
    }
    say = (lambda *_: None) if as_json else click.echo
    service: tuple[str, str] | None = None  # (b)'s gateway URL and API key
    if not skip_service:
        url = url or stack_url(data_dir)
        if not url or not api_key:
            raise click.ClickException("(b) needs --url (or a `veil up` stack in --data-dir) and --api-key")
        service = (url, api_key)

    def run_service(some: list[tuple[str, bytes]]) -> Phase:
        assert service is not None
        return asyncio.run(end_to_end(*service, some, wanted, concurrency, poll_s, timeout_s, wait_s))

    engine = None if skip_model else load_bench_engine(settings)
    runs: dict[str, tuple[str, Callable[[], Phase]]] = {}
    if engine is not None:
        runs["a"] = (
            f"(a) model-only: {len(images)} images",
            lambda: model_only(engine, images, wanted, settings),
        )
    if service is not None:
        runs["b"] = (f"(b) end-to-end via {url}, concurrency {concurrency}", lambda: run_service(images))
    per_round: list[dict[str, float]] = []
    try:
        if warm_up:
            warm = one_per_size(images, settings.limits.max_pixels)
            report["warm_up_images"] = len(warm)
            say(f"warm-up: {len(warm)} images, one per distinct size, untimed …")
            if engine is not None:
                model_only(engine, warm, wanted, settings)
            if service is not None:
                run_service(warm)
        for number in range(1, rounds + 1):
            this: dict[str, float] = {}
            for name in phase_order(number):
                if name not in runs:
                    continue
                title, run = runs[name]
                say(f"round {number}/{rounds} {title} …")
                times = cpuuse.machine_times()
                phase = run()
                _note_phase(this, name, phase, cpuuse.steal_share(times, cpuuse.machine_times()))
                report[PHASE_KEYS[name]] = asdict(phase)
            round_ratio(this)
            per_round.append(this)
    finally:
        if engine is not None:
            engine.close()
    summary = medians(per_round, max_steal)
    for key, value in summary.pop("img_per_s", {}).items():
        report[key]["img_per_s"] = value
    report.update(summary)
    if "end_to_end" in report:
        report.update(workers_report(settings.redis.url, settings.redis.prefix))
    report["machine_after"] = _machine()
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
