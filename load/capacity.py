"""The capacity table of docs/capacity.md, computed from measured inputs (each input names its source).

    .venv/bin/python -m load.capacity                      # the table for 1 M, 10 M and 100 M photos a day
    .venv/bin/python -m load.capacity --peak 4 --worker-ms 200 --per-day 5e6

Every input is a figure measured on a named host, or marked an estimate; change one with its flag when
your own `veil bench` / `load/redis_job_memory.py` figures differ.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

DAY = 86_400


@dataclass(frozen=True)
class Inputs:
    # Worker CPU per photo at defaults (`best`), ms: docs/benchmarks.md 2026-11-30 17:13 (2-vCPU AVX2 EPYC,
    # fp32): the stack was busy 845 ms per photo, minus gateway 11.3, SeaweedFS 17.5, Redis 3.9, bench ~2.
    worker_ms: float = 810.0
    # Cores' share a worker pool is sized to (headroom for bursts and the GC; HPA/KEDA targets).
    worker_util: float = 0.7
    # Worker RSS with 2 lanes, `best`: docs/benchmarks.md 19:38 (1618 MB; `permissive` 2129 MB).
    worker_rss_gb: float = 1.62
    cores_per_worker: int = 2
    # ESTIMATE until measured on a GPU: photos/s one GPU's detectors take (batched, fp16), and the CPU per
    # photo a GPU worker still spends (decode 5 + blur 1.3 + encode 3 + event loop 5.5 ms, measured on CPU).
    gpu_photos_per_s: float = 150.0
    gpu_worker_cpu_ms: float = 15.0
    # Gateway CPU per photo under load, ms (17:13 run: 11.3; 3.6 with no model on the cores).
    gateway_ms: float = 11.3
    gateway_util: float = 0.6
    # Redis CPU per photo, ms (08:13-09:29 runs: 1.0-1.2; 3.9 on the 2-core host sharing with the models),
    # and an idle worker's poll (load/arq_queue_cost.py: 1.3 ms of Redis CPU a second per worker).
    redis_ms: float = 1.2
    redis_poll_ms_per_s: float = 1.3
    redis_util: float = 0.7  # Redis runs commands on one thread
    # Redis memory per job (load/redis_job_memory.py, 2026-11-30): queued 1670 B, finished record 2074 B,
    # kept RECORD_TTL_SECONDS (2 days, shared/jobstore.py).
    redis_queued_bytes: float = 1670.0
    redis_record_bytes: float = 2074.0
    record_days: float = 2.0
    queue_minutes: float = 5.0  # backlog to hold at peak before admission answers QUEUE_FULL
    redis_max_gb: float = 64.0  # a large single managed instance
    # S3 per photo: PUT upload, GET by the worker, PUT result, DELETE original (docs/benchmarks.md), + the
    # client's GET of the presigned result. Bytes: mean upload 269 KiB (../shared/eval/plates), result
    # ~0.6 of it (re-encoded at quality 92).
    s3_writes: int = 3
    s3_reads: int = 2
    upload_kib: float = 269.0
    result_kib: float = 162.0
    s3_prefix_writes_per_s: float = 3500.0  # AWS S3's documented rate per partitioned prefix


def _ceil(x: float) -> int:
    return max(1, math.ceil(x))


def plan(per_day: float, peak: float, i: Inputs) -> dict[str, str]:
    """One column of the table: what ``per_day`` photos a day with a peak of ``peak`` x the mean needs."""
    rate = per_day / DAY * peak
    cpu_cores = rate * i.worker_ms / 1000 / i.worker_util
    cpu_workers = _ceil(cpu_cores / i.cores_per_worker)
    gpus = _ceil(rate / (i.gpu_photos_per_s * i.worker_util))
    gpu_cpu = rate * i.gpu_worker_cpu_ms / 1000 / i.worker_util
    gateways = max(2, _ceil(rate * i.gateway_ms / 1000 / i.gateway_util))
    redis_cpu = (rate * i.redis_ms + cpu_workers * i.redis_poll_ms_per_s) / 1000
    redis_gb = (
        per_day * i.record_days * i.redis_record_bytes + rate * 60 * i.queue_minutes * i.redis_queued_bytes
    ) / 1e9
    cells = max(_ceil(redis_cpu / i.redis_util), _ceil(redis_gb / i.redis_max_gb))
    writes = rate * i.s3_writes
    mb_s = rate * (2 * i.upload_kib + 2 * i.result_kib) / 1024
    at_rest_tb = per_day * i.result_kib / 1024**3
    return {
        "peak photos/s": f"{rate:,.0f}",
        "CPU worker cores (pods)": f"{cpu_cores:,.0f} ({cpu_workers:,})",
        "CPU worker memory": f"{cpu_workers * i.worker_rss_gb:,.0f} GB",
        "or GPUs (+ CPU cores)": f"{gpus:,} (+{gpu_cpu:,.0f})",
        "gateway replicas (1 core)": f"{gateways:,}",
        "Redis CPU (one thread)": f"{redis_cpu:.2f} cores",
        "Redis memory": f"{redis_gb:,.1f} GB",
        "cells (Redis instances)": f"{cells:,}",
        "S3 writes/s (reads/s)": f"{writes:,.0f} ({rate * i.s3_reads:,.0f})",
        "S3 traffic": f"{mb_s:,.0f} MB/s",
        "results at rest (24 h)": f"{at_rest_tb:,.2f} TB",
    }


def first_limits(peak: float, i: Inputs) -> list[tuple[str, float]]:
    """Photos a day one cell carries before each shared part is full, smallest first (gateways and workers
    scale out; Redis and an S3 prefix do not)."""
    per_day_at = DAY / peak
    # Redis CPU: rate * redis_ms + workers(rate) * poll <= util * 1000
    per_photo_redis = (
        i.redis_ms + i.worker_ms / 1000 / i.worker_util / i.cores_per_worker * i.redis_poll_ms_per_s
    )
    redis_cpu_rate = i.redis_util * 1000 / per_photo_redis
    per_day_bytes = (
        i.record_days * i.redis_record_bytes + peak / DAY * 60 * i.queue_minutes * i.redis_queued_bytes
    )
    limits = [
        ("Redis CPU", redis_cpu_rate * per_day_at),
        (f"Redis memory ({i.redis_max_gb:.0f} GB)", i.redis_max_gb * 1e9 / per_day_bytes),
        ("S3 writes on one prefix", i.s3_prefix_writes_per_s / i.s3_writes * per_day_at),
    ]
    return sorted(limits, key=lambda item: item[1])


def render(volumes: list[float], peak: float, i: Inputs) -> str:
    columns = [plan(v, peak, i) for v in volumes]
    head = ["per day"] + [f"{v / 1e6:g} M" for v in volumes]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * len(volumes) + "|"]
    for row in columns[0]:
        lines.append("| " + " | ".join([row, *(c[row] for c in columns)]) + " |")
    lines.append("")
    lines.append(f"One cell (one Redis, one bucket prefix), peak {peak:g}x the mean, is full at:")
    for name, per_day in first_limits(peak, i):
        lines.append(f"- {name}: {per_day / 1e6:,.1f} M photos a day")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-day", type=float, action="append", help="photos a day (repeatable)")
    parser.add_argument("--peak", type=float, default=3.0, help="peak rate as a multiple of the mean")
    parser.add_argument("--worker-ms", type=float, help="worker CPU per photo, ms")
    parser.add_argument("--gpu-photos-per-s", type=float, help="photos/s one GPU takes (estimate)")
    parser.add_argument("--redis-ms", type=float, help="Redis CPU per photo, ms")
    parser.add_argument("--cores-per-worker", type=int, help="cores (lanes) per worker pod")
    args = parser.parse_args()
    overrides = {
        name: value
        for name, value in (
            ("worker_ms", args.worker_ms),
            ("gpu_photos_per_s", args.gpu_photos_per_s),
            ("redis_ms", args.redis_ms),
            ("cores_per_worker", args.cores_per_worker),
        )
        if value is not None
    }
    print(render(args.per_day or [1e6, 1e7, 1e8], args.peak, Inputs(**overrides)))


if __name__ == "__main__":
    main()
