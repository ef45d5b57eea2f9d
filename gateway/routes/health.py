"""Liveness and readiness, without authentication.

``/healthz``: the process answers. ``/readyz``: Redis answers, the bucket is reachable and at least one
worker has announced itself with its models loaded; 503 with every check's result otherwise, and 503 with
``draining: true`` once the gateway was told to stop (gateway/drain.py), so a load balancer stops sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.drain import DRAINING
from gateway.responses import json_response
from gateway.state import REDIS, SETTINGS, STORE
from shared.readiness import ready_workers

routes = web.RouteTableDef()

CHECK_TIMEOUT_SECONDS = 3.0


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    """One readiness check; the other fields say what it found."""

    model_config = ConfigDict(extra="allow")  # a probe's findings are passed on as they are

    ok: bool
    error: str | None = Field(default=None, description="Why it failed.")
    bucket: str | None = Field(default=None, description="store: Veil's bucket.")
    count: int | None = Field(default=None, description="workers: how many are ready.")
    models: list[str] | None = Field(default=None, description="workers: the weights the ready workers run.")


class Checks(BaseModel):
    redis: Check
    store: Check
    workers: Check


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    draining: bool = Field(default=False, description="The gateway is stopping: it takes no new traffic.")
    checks: Checks


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok").model_dump())


async def _check(probe: Awaitable[dict[str, object]]) -> dict[str, object]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return {"ok": True, **await probe}
    except TimeoutError:
        return {"ok": False, "error": f"timed out after {CHECK_TIMEOUT_SECONDS:g} s"}
    except Exception as exc:
        return {"ok": False, "error": str(exc) or type(exc).__name__}


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    redis = request.config_dict[REDIS]
    store = request.config_dict[STORE]
    prefix = request.config_dict[SETTINGS].redis.prefix

    async def redis_probe() -> dict[str, object]:
        await redis.ping()
        return {}

    async def store_probe() -> dict[str, object]:
        await asyncio.to_thread(store.ping)
        return {"bucket": store.bucket}

    async def workers_probe() -> dict[str, object]:
        workers = await ready_workers(redis, prefix)
        if not workers:
            raise RuntimeError("no worker with loaded models has announced itself")
        # Which weights the ready workers run (the `models` profile shows here: platedet or not).
        models = sorted({model for worker in workers for model in worker.models})
        return {"count": len(workers), "models": models}

    redis_result, store_result, workers_result = await asyncio.gather(
        _check(redis_probe()), _check(store_probe()), _check(workers_probe())
    )
    checks = Checks.model_validate({"redis": redis_result, "store": store_result, "workers": workers_result})
    stopping = request.config_dict.get(DRAINING)
    draining = stopping is not None and stopping.is_set()
    ready = checks.redis.ok and checks.store.ok and checks.workers.ok and not draining
    answer = Readiness(status="ready" if ready else "not_ready", draining=draining, checks=checks)
    return json_response(answer.model_dump(exclude_none=True), status=200 if ready else 503)
