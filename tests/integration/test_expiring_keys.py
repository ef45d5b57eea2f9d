"""Short-lived API keys (``veil up``'s demo key), against the real Redis: the record and its Redis TTL,
refused once expired (at the gateway too), dropped from the list, and the demo link ``veil up`` prints."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis

from cli.stack import DEMO_KEY_TTL_SECONDS, create_demo_key, demo_link
from shared.apikeys import ApiKey, ApiKeyStore
from shared.jobs import utcnow
from shared.redisutil import resolve
from shared.settings import Settings
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration


def _store(redis: Redis, unique: str) -> ApiKeyStore:
    return ApiKeyStore(redis, f"test-{unique}")


async def _record_key(redis: Redis, prefix: str, key_id: str) -> str:
    """The Redis key of ``key_id``'s record (the index maps ids to token digests)."""
    digest: bytes | str | None = await resolve(redis.hget(f"{prefix}:apikeys", key_id))
    assert digest is not None
    return f"{prefix}:apikey:{digest.decode() if isinstance(digest, bytes) else digest}"


async def test_a_key_with_a_ttl_carries_its_expiry_and_redis_drops_it(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    before = utcnow()
    token, key = await store.create("demo", ttl_seconds=3600)
    assert key.expires_at is not None
    expires_at = datetime.fromisoformat(key.expires_at)
    assert before + timedelta(seconds=3600) <= expires_at <= utcnow() + timedelta(seconds=3600)
    assert 0 < await redis.ttl(await _record_key(redis, f"test-{unique}", key.id)) <= 3600
    verified = await store.verify(token)
    assert verified is not None
    assert verified.id == key.id
    assert verified.expires_at == key.expires_at


async def test_a_key_without_a_ttl_never_expires(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    token, key = await store.create("me")
    assert key.expires_at is None
    assert await redis.ttl(await _record_key(redis, f"test-{unique}", key.id)) == -1  # no TTL
    assert await store.verify(token) is not None


@pytest.mark.parametrize("ttl", [0, -5])
async def test_a_ttl_below_one_second_is_refused(redis: Redis, unique: str, ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be at least 1"):
        await _store(redis, unique).create("demo", ttl_seconds=ttl)
    assert await redis.exists(f"test-{unique}:apikeys") == 0


async def test_a_record_past_its_expiry_is_refused_even_if_redis_kept_it(redis: Redis, unique: str) -> None:
    """Redis's TTL is the first line; ``verify`` checks the time too (e.g. a record restored without it)."""
    store = _store(redis, unique)
    token, key = await store.create("demo", ttl_seconds=3600)
    stale = key.model_copy(update={"expires_at": (utcnow() - timedelta(seconds=1)).isoformat()})
    await redis.set(await _record_key(redis, f"test-{unique}", key.id), stale.model_dump_json())  # and no TTL
    assert await store.verify(token) is None


def test_expired_compares_with_the_given_time() -> None:
    key = ApiKey(id="k", name="demo", expires_at="2030-01-01T00:00:00+00:00")
    assert not key.expired(datetime.fromisoformat("2029-12-31T23:59:59+00:00"))
    assert key.expired(datetime.fromisoformat("2030-01-01T00:00:00+00:00"))
    assert not ApiKey(id="k", name="me").expired()


async def test_list_drops_the_keys_redis_has_expired(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    _, kept = await store.create("me")
    _, gone = await store.create("demo", ttl_seconds=60)
    await redis.delete(await _record_key(redis, f"test-{unique}", gone.id))  # what Redis does at the TTL
    assert [key.id for key in await store.list()] == [kept.id]
    assert await resolve(redis.hkeys(f"test-{unique}:apikeys")) == [kept.id.encode()]
    assert await store.get(gone.id) is None


async def test_the_gateway_refuses_an_expired_key(
    client: GatewayClient, settings: Settings, redis: Redis
) -> None:
    store = ApiKeyStore(redis, settings.redis.prefix)
    token, key = await store.create("demo", ttl_seconds=3600)
    response = await client.get("/v1/jobs/nope", headers={"X-API-Key": token})
    assert response.status == 404  # the key works: an unknown job
    record = await _record_key(redis, settings.redis.prefix, key.id)
    stale = key.model_copy(update={"expires_at": (utcnow() - timedelta(seconds=1)).isoformat()})
    await redis.set(record, stale.model_dump_json(), keepttl=True)
    response = await client.get("/v1/jobs/nope", headers={"X-API-Key": token})
    assert response.status == 401
    assert await response.json() == {"message": "unknown or revoked API key", "code": "UNAUTHORIZED"}


async def test_veil_up_demo_key_and_link(settings: Settings, redis: Redis) -> None:
    token = await create_demo_key(settings.redis.url, settings.redis.prefix)
    key = await ApiKeyStore(redis, settings.redis.prefix).verify(token)
    assert key is not None
    assert key.name == "demo"
    assert key.expires_at is not None
    record = await _record_key(redis, settings.redis.prefix, key.id)
    assert 0 < await redis.ttl(record) <= DEMO_KEY_TTL_SECONDS
    assert DEMO_KEY_TTL_SECONDS == 3600
    assert demo_link("http://127.0.0.1:8080", token) == f"http://127.0.0.1:8080/demo#key={token}"
