"""What ``veil bench`` reports about the workers: their plan and RSS from their readiness heartbeats in
Redis, or the RSS of local worker processes where Redis cannot tell."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil

from cli import cpuuse


async def worker_runtime(redis_url: str | None, prefix: str) -> tuple[list[dict[str, Any]], str | None]:
    """Ready workers' heartbeats (provider, plan, RSS), or why they could not be read."""
    if not redis_url:
        return [], "no Redis URL"
    from shared.readiness import ready_workers
    from shared.redisconn import redis_client

    redis = redis_client(redis_url, socket_connect_timeout=2)
    try:
        return [w.model_dump() for w in await ready_workers(redis, prefix)], None
    except Exception as exc:  # unreachable Redis, or heartbeats of another version: RSS falls back to local
        return [], f"{type(exc).__name__}: {exc}"
    finally:
        await redis.aclose()


def local_worker_rss() -> list[int]:
    """RSS of local worker processes (``python -m workers``, ``veil worker``; fallback without Redis)."""
    found: list[int] = []
    for role, proc in cpuuse.stack_processes():
        if role != "worker":
            continue
        try:
            found.append(proc.memory_info().rss)
        except psutil.Error:  # ended while we looked
            continue
    return found


def workers_report(redis_url: str | None, prefix: str) -> dict[str, Any]:
    """The report's ``workers`` (id, providers, runtime, RSS), ``worker_rss_mb`` and ``workers_error``."""
    workers, problem = asyncio.run(worker_runtime(redis_url, prefix))
    report: dict[str, Any] = {}
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
    return report
