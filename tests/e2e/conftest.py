"""A live stack for end-to-end tests: the real gateway and worker processes (``python -m gateway`` and
``python -m workers``) against the session's Redis and SeaweedFS, as ``veil up`` runs them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cli.embedded import free_port
from cli.stack import start_veil_processes, wait_ready
from shared.apikeys import ApiKeyStore
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LiveStack:
    url: str
    api_key: str
    other_key: str
    settings: Settings
    webhook_secret: str  # of `api_key`


async def _create_keys(settings: Settings) -> tuple[str, str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        store = ApiKeyStore(redis, settings.redis.prefix)
        first, key = await store.create("e2e")
        second, _ = await store.create("e2e-other")
        assert key.webhook_secret is not None
        return first, second, key.webhook_secret
    finally:
        await redis.aclose()


@pytest.fixture(scope="session")
def live_stack(
    stack_env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    port = free_port()
    logs = tmp_path_factory.mktemp("live")
    # Its own Redis database: the live worker must not take jobs that other tests queue and inspect.
    redis_url = settings.redis.url.rsplit("/", 1)[0] + "/1"
    settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": redis_url})})
    env = {
        **os.environ,
        **stack_env,
        "VEIL_REDIS__URL": redis_url,
        "VEIL_GATEWAY__PORT": str(port),
        "VEIL_WORKER__PROVIDERS": "CPUExecutionProvider",
        "VEIL_URL_ALLOWLIST": "127.0.0.1",
        "VEIL_VIDEO__ENABLED": "true",
        "VEIL_VIDEO__JOB_TIMEOUT_SECONDS": "120",
    }
    services = start_veil_processes(env, logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 180, services)
        api_key, other_key, secret = asyncio.run(_create_keys(settings))
        yield LiveStack(
            url=url, api_key=api_key, other_key=other_key, settings=settings, webhook_secret=secret
        )
    finally:
        for service in reversed(services):
            service.stop()
