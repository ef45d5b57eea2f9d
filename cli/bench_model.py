"""``veil bench`` (a), the model-only loop: decode + both detectors, as the issue defines it.

The worker's own engine (same plan: providers, lanes, threads, model precisions) runs
``Anonymizer.detect`` on the image bytes in this process, one lane per core as the worker does; blurring
and encoding (a few ms, done in (b)) are not part of it. The worker's modules are imported inside the
functions, so ``veil`` starts without the inference stack.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from cli import cpuuse
from cli.bench_stats import Phase, summarize


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


def load_bench_engine(settings: Any) -> Any:
    """The worker's own engine, as the worker would load it on this machine, warmed up."""
    import cv2

    from workers.engine import load_engine
    from workers.plan import cpu_count

    engine = load_engine(settings.worker)
    if engine.plan.lanes >= cpu_count():
        cv2.setNumThreads(1)
    engine.warm_up()
    return engine


def model_only(engine: Any, images: list[tuple[str, bytes]], targets: list[str], settings: Any) -> Phase:
    from shared.jobs import BlurOptions, Target

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
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        # Median per stage, in ms of one lane (stages of different lanes overlap).
        "stage_p50_ms": {name: round(statistics.median(v), 1) for name, v in timings.items()},
        "stage_share": _shares(timings),
        "cpu_ms_per_photo": cpu_per_photo,
    }
    return phase


def _shares(timings: dict[str, list[float]]) -> dict[str, float]:
    # Stages only: a source's time (source.*) is part of its class's detect_* stage, in stage_p50_ms.
    totals = {name: sum(values) for name, values in timings.items() if not name.startswith("source.")}
    whole = sum(totals.values()) or 1.0
    return {name: round(total / whole, 3) for name, total in totals.items()}
