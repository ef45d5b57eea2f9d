"""Worker presence in Redis: a worker announces itself only after its models are loaded and warm.

Each worker refreshes ``{prefix}:worker:{id}`` every few seconds with a short TTL; ``/readyz`` on the
gateway is ready while at least one such key exists.
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel
from redis.asyncio import Redis

HEARTBEAT_SECONDS = 5
TTL_SECONDS = 20


class WorkerInfo(BaseModel):
    id: str
    providers: list[str]
    models: list[str]
    started_at: str
    host: str
    # Refreshed with every heartbeat, so `veil bench` (or an operator) can read it without shell access.
    rss_bytes: int | None = None
    runtime: dict[str, str | int | float] = {}


def _key(prefix: str, worker_id: str) -> str:
    return f"{prefix}:worker:{worker_id}"


async def announce(redis: Redis, prefix: str, info: WorkerInfo) -> None:
    await redis.set(_key(prefix, info.id), info.model_dump_json(), ex=TTL_SECONDS)


async def withdraw(redis: Redis, prefix: str, worker_id: str) -> None:
    await redis.delete(_key(prefix, worker_id))


async def ready_workers(redis: Redis, prefix: str) -> list[WorkerInfo]:
    workers: list[WorkerInfo] = []
    async for key in redis.scan_iter(match=_key(prefix, "*"), count=100):
        raw = await redis.get(key)
        if raw is not None:
            workers.append(WorkerInfo.model_validate(orjson.loads(raw)))
    return workers
