"""Session fixtures: a real redis-server and a real SeaweedFS (`weed mini`) on free loopback ports.

Started once per test session in a temp dir and stopped at the end. No fakes: what the tests see is
what production code talks to.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cli.embedded import RedisServer, SeaweedServer, s3_environment, start_redis, start_seaweed
from shared.settings import Settings, load_settings
from shared.storage import ObjectStore
from tests.webhook_receiver import Receiver, running_receiver

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / ".cache" / "models"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack_env(redis_server: RedisServer, seaweed_server: SeaweedServer) -> dict[str, str]:
    """Environment variables that point any Veil process at the test servers."""
    return {
        "VEIL_REDIS__URL": redis_server.url,
        **s3_environment(seaweed_server),
        "VEIL_S3__BUCKET": "veil-test",
        "VEIL_WORKER__MODEL_DIR": str(MODEL_DIR),
        "VEIL_S3__READABLE_BUCKETS": "veil-user-bucket",
        "VEIL_S3__WRITABLE_BUCKETS": "veil-user-output",
    }


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, seaweed_server: SeaweedServer) -> Settings:
    """Settings for in-process code under test; every test session gets its own Redis key prefix."""
    base = load_settings()
    return base.model_copy(
        update={
            "redis": base.redis.model_copy(update={"url": redis_server.url}),
            "s3": base.s3.model_copy(
                update={
                    "endpoint_url": seaweed_server.s3_url,
                    "access_key_id": "veil",
                    "secret_access_key": "veil-secret",
                    "bucket": "veil-test",
                    "readable_buckets": ["veil-user-bucket"],
                    "writable_buckets": ["veil-user-output"],
                }
            ),
            "worker": base.worker.model_copy(
                update={"model_dir": MODEL_DIR, "providers": ["CPUExecutionProvider"]}
            ),
            "video": base.video.model_copy(update={"enabled": True}),
        }
    )


@pytest.fixture(scope="session")
def store(settings: Settings) -> ObjectStore:
    object_store = ObjectStore(settings.s3)
    object_store.ensure_bucket()
    # Buckets that stand for a customer's own: images to read, and a place for blurred copies.
    for bucket in (*settings.s3.readable_buckets, *settings.s3.writable_buckets):
        object_store.create_bucket_if_missing(bucket)
    return object_store


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on 127.0.0.1 that records deliveries."""
    async with running_receiver() as state:
        yield state
