"""Key lifecycle in the real Redis: scopes (and keys stored before them), rotation with a grace period that
ends (by the clock and by Redis's TTL), updates, and revocation that takes rotated-out tokens along."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from shared.apikeys import DEFAULT_SCOPES, MAX_GRACE_SECONDS, ApiKey, ApiKeyStore, Scope, parse_scopes
from shared.jobs import utcnow
from shared.redisutil import resolve

pytestmark = pytest.mark.integration


def _store(redis: Redis, unique: str) -> ApiKeyStore:
    return ApiKeyStore(redis, f"test-{unique}")


async def _names(redis: Redis, unique: str) -> set[str]:
    return {name.decode() async for name in redis.scan_iter(match=f"test-{unique}:*")}


async def test_new_keys_submit_and_read_and_scopes_are_kept(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    _, plain = await store.create("plain")
    assert plain.scopes == DEFAULT_SCOPES == (Scope.SUBMIT, Scope.READ)
    token, _ = await store.create("ops", scopes=[Scope.ADMIN])
    verified = await store.verify(token)
    assert verified is not None
    assert verified.scopes == (Scope.ADMIN,)
    assert not verified.allows(Scope.SUBMIT)
    assert verified.allows(Scope.READ)  # admin includes read
    assert not plain.allows(Scope.ADMIN)


async def test_a_key_stored_before_scopes_reads_as_submit_and_read(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    token, key = await store.create("old")
    old_json = key.model_dump_json(exclude={"scopes", "rotated_at"})
    digest: bytes | str | None = await resolve(redis.hget(f"test-{unique}:apikeys", key.id))
    assert isinstance(digest, bytes)
    await redis.set(f"test-{unique}:apikey:{digest.decode()}", old_json)
    verified = await store.verify(token)
    assert verified is not None
    assert verified.scopes == DEFAULT_SCOPES


async def test_a_rotated_key_keeps_its_id_and_the_old_token_works_only_during_the_grace(
    redis: Redis, unique: str
) -> None:
    store = _store(redis, unique)
    old_token, key = await store.create("rotating", scopes=[Scope.READ])
    rotation = await store.rotate(key.id, 3600)
    assert rotation is not None
    assert rotation.token != old_token
    assert rotation.key.id == key.id
    assert rotation.key.webhook_secret == key.webhook_secret  # not asked to rotate it
    new = await store.verify(rotation.token)
    old = await store.verify(old_token)
    assert new is not None and old is not None
    assert new.id == old.id == key.id
    # The old token answers for the key as it is now: a change of scopes applies to it too.
    await store.update(key.id, scopes=[Scope.SUBMIT])
    during = await store.verify(old_token)
    assert during is not None
    assert during.scopes == (Scope.SUBMIT,)
    # Past the grace the clock refuses it, and Redis drops it by then on its own.
    assert rotation.old_valid_until is not None
    assert await store.verify(old_token, now=utcnow() + timedelta(seconds=3601)) is None
    assert await store.verify(rotation.token, now=utcnow() + timedelta(seconds=3601)) is not None
    retired = [name for name in await _names(redis, unique) if ":apikey-retired:" in name]
    assert len(retired) == 1
    assert 0 < await redis.ttl(retired[0]) <= 3600


async def test_a_rotation_without_grace_stops_the_old_token_at_once(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    old_token, key = await store.create("rotating")
    rotation = await store.rotate(key.id, 0, webhook_secret=True)
    assert rotation is not None
    assert rotation.old_valid_until is None
    assert await store.verify(old_token) is None
    assert rotation.key.webhook_secret != key.webhook_secret
    stored = await store.get(key.id)
    assert stored is not None
    assert stored.webhook_secret == rotation.key.webhook_secret
    assert stored.rotated_at is not None


@pytest.mark.parametrize("grace", [-1, MAX_GRACE_SECONDS + 1])
async def test_a_grace_out_of_range_is_refused(redis: Redis, unique: str, grace: int) -> None:
    store = _store(redis, unique)
    _, key = await store.create("k")
    with pytest.raises(ValueError, match="grace_seconds must be between 0 and"):
        await store.rotate(key.id, grace)


async def test_unknown_ids_are_none(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    assert await store.rotate("nope", 10) is None
    assert await store.update("nope", name="x") is None
    assert await store.revoke("nope") is False


async def test_revoking_a_rotated_key_stops_every_token_and_leaves_nothing(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    first, key = await store.create("gone")
    second = await store.rotate(key.id, 3600)
    assert second is not None
    third = await store.rotate(key.id, 3600)
    assert third is not None
    assert await store.revoke(key.id)
    for token in (first, second.token, third.token):
        assert await store.verify(token) is None
    assert await _names(redis, unique) == set()


async def test_rotations_and_a_revocation_racing_leave_no_live_token(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    _, key = await store.create("raced")
    outcomes = await asyncio.gather(
        *(store.rotate(key.id, 0) for _ in range(8)), store.revoke(key.id), return_exceptions=True
    )
    assert not [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert await store.get(key.id) is None
    # No record is left that the index does not point at: such a token could never be revoked.
    records = [name for name in await _names(redis, unique) if ":apikey:" in name]
    assert records == []


async def test_update_renames_and_keeps_a_short_lived_keys_ttl(redis: Redis, unique: str) -> None:
    store = _store(redis, unique)
    token, key = await store.create("demo", ttl_seconds=600)
    updated = await store.update(key.id, name="  renamed  ", scopes="read")
    assert updated is not None
    assert (updated.name, updated.scopes) == ("renamed", (Scope.READ,))
    record = next(name for name in await _names(redis, unique) if ":apikey:" in name)
    assert 0 < await redis.ttl(record) <= 600
    rotation = await store.rotate(key.id, 0)
    assert rotation is not None
    record = next(name for name in await _names(redis, unique) if ":apikey:" in name)
    assert 0 < await redis.ttl(record) <= 600  # a rotated demo key still expires when it would have
    assert await store.verify(token) is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "at least one"),
        ("submit,owner", "unknown scope 'owner'"),
        ([], "at least one"),
    ],
)
def test_bad_scopes_say_what_is_wrong(given: str | list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scopes(given)


def test_scopes_parse_in_a_stable_order() -> None:
    assert parse_scopes(" Admin , read,read") == (Scope.READ, Scope.ADMIN)
    assert ApiKey(id="k", name="n").public().keys() >= {"id", "name", "scopes"}
    assert "webhook_secret" not in ApiKey(id="k", name="n", webhook_secret="whsec_x").public()
