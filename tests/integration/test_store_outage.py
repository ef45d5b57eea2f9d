"""A store that stops answering (a paused SeaweedFS: connections are accepted, nothing comes back) costs
a submission at most ``VEIL_S3__REQUEST_TIMEOUT_SECONDS`` per store call: 503 STORE_UNAVAILABLE, nothing
queued, instead of hanging for as long as the outage lasts."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cli.embedded import SeaweedServer, start_seaweed
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory
from tests.integration.test_gateway_jobs import accepted, error_of, multipart, with_changes

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, to pause: the session's one stays up for every other test."""
    server = start_seaweed(tmp_path / "seaweed")
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


@contextlib.contextmanager
def paused(server: SeaweedServer) -> Iterator[None]:
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def _jobs_and_queue(redis: Redis, settings: Settings) -> tuple[list[bytes], int]:
    records = sorted([key async for key in redis.scan_iter(match=f"{settings.redis.prefix}:job:*")])
    return records, await redis.zcard(settings.redis.queue_name)


@pytest.mark.timeout(60)  # the bound under test is 1 s a call; this only guards against a hang
async def test_a_paused_store_is_503_at_once_and_queues_nothing(
    make_client: ClientFactory,
    settings: Settings,
    own_seaweed: SeaweedServer,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    camera_png: bytes,
    redis: Redis,
    unique: str,
) -> None:
    own = with_changes(
        settings,
        s3={"endpoint_url": own_seaweed.s3_url, "request_timeout_seconds": 1.0},
        redis={"queue_name": f"queue-{unique}"},
    )
    store = ObjectStore(own.s3)
    store.ensure_bucket()
    store.create_bucket_if_missing(USER_BUCKET)
    store.put(f"photos/{unique}.png", camera_png, "image/png", bucket=USER_BUCKET)
    client = await make_client(own)
    # While the store answers, both kinds of input are queued (and the client holds live connections).
    await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))
    stored = {"s3": {"bucket": USER_BUCKET, "key": f"photos/{unique}.png"}}
    await accepted(await client.post("/v1/jobs", json=stored, headers=auth))

    before = await _jobs_and_queue(redis, own)
    with paused(own_seaweed):
        response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
        await error_of(response, 503, "STORE_UNAVAILABLE")
        assert response.headers["Retry-After"]
        response = await client.post("/v1/jobs", json=stored, headers=auth)
        await error_of(response, 503, "STORE_UNAVAILABLE")
        assert await _jobs_and_queue(redis, own) == before

    # Back again: accepted as before.
    await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))
