"""API keys: random tokens shown once, stored in Redis only as their SHA-256; each key an account.

A key's id is its account: jobs, usage, quotas and webhook deliveries hang off the id, never the token, so
:meth:`ApiKeyStore.rotate` swaps the token and keeps all of it. Redis layout (``<p>`` the prefix):

* ``<p>:apikey:<digest>`` — the key's record (:class:`ApiKey`) under its current token's digest;
* ``<p>:apikeys`` — a hash, key id → current digest (the index ``get``/``list`` read);
* ``<p>:apikey-retired:<digest>`` — a rotated-out token still in its grace period (:class:`RetiredToken`,
  with a Redis TTL to match; ``verify`` checks the time as well), answering for the key's *current* record,
  so scopes changed or a revocation apply to it at once;
* ``<p>:apikey-retired-of:<id>`` — the digests of those, so a revocation removes them too.

A key may be short-lived (``veil up``'s demo key): its record then carries ``expires_at`` and a Redis TTL
to match, so Redis forgets it on its own; ``verify`` checks the time as well. Every change of a record is a
WATCHed transaction on the index and the record: a rotation, an update and a revocation racing each other
never leave a record no index entry points at (a token nobody could revoke).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.jobs import utcnow
from shared.redisutil import resolve
from shared.webhooks import new_secret

KEY_PREFIX = "veil_"
MAX_GRACE_SECONDS = 7 * 24 * 3600  # an old token outlives its rotation by at most a week
MAX_NAME_CHARS = 200


class Scope(StrEnum):
    SUBMIT = "submit"  # create jobs, bulk jobs, redeliveries; delete results (every non-GET request)
    READ = "read"  # GET/HEAD: jobs, results, deliveries, usage
    ADMIN = "admin"  # /v1/admin/...: manage keys; every key's usage (it includes read, not submit)


# New keys, and keys stored before scopes existed (their records have none): what every key could do then.
DEFAULT_SCOPES: tuple[Scope, ...] = (Scope.SUBMIT, Scope.READ)


def parse_scopes(value: str | Iterable[str]) -> tuple[Scope, ...]:
    """``submit,read`` (or a list) as scopes, in a stable order; :class:`ValueError` naming what is wrong."""
    names = value.split(",") if isinstance(value, str) else list(value)
    scopes: list[Scope] = []
    for raw in names:
        if not isinstance(raw, str):
            raise ValueError(f"a scope must be a string, not {raw!r}")
        name = raw.strip().lower()
        if not name:
            continue
        try:
            scopes.append(Scope(name))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise ValueError(f"unknown scope {raw!r}: the scopes are {known}") from None
    if not scopes:
        raise ValueError("scopes must name at least one of submit, read, admin")
    return tuple(scope for scope in Scope if scope in scopes)


def check_name(name: str) -> str:
    """A key's label, stripped: 1 to 200 characters, no control characters."""
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_NAME_CHARS:
        raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in stripped):
        raise ValueError("name must not contain control characters")
    return stripped


class ApiKey(BaseModel):
    id: str
    name: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())
    # Signs this key's webhook deliveries (shared/webhooks.py); shown once, with the key. ``whsec_`` and
    # base64 of the key bytes (Standard Webhooks); keys created before spell it in URL-safe base64.
    webhook_secret: str | None = None
    # Short-lived keys only (ISO 8601, UTC): past it the key is refused, and Redis has dropped it.
    expires_at: str | None = None
    scopes: tuple[Scope, ...] = DEFAULT_SCOPES
    rotated_at: str | None = None  # the last rotation (ISO 8601, UTC)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) <= (now or utcnow())

    def allows(self, scope: Scope) -> bool:
        """Whether the key has ``scope``; ``admin`` includes ``read`` (an admin reads every key's usage)."""
        return scope in self.scopes or (scope is Scope.READ and Scope.ADMIN in self.scopes)

    def public(self) -> dict[str, object]:
        """The record as admins and exports see it: never the webhook secret (nor, as ever, the token)."""
        return self.model_dump(mode="json", exclude={"webhook_secret"})


class RetiredToken(BaseModel):
    """A rotated-out token in its grace period: whose it is and until when it still works."""

    key_id: str
    until: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Rotation:
    token: str  # the new key: shown once
    key: ApiKey
    old_valid_until: str | None  # None: the old token stopped working at once (no grace)
    webhook_secret_rotated: bool


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _multi(pipe: Pipeline) -> None:
    """Start queueing the transaction's commands (after the WATCHed reads)."""
    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _remaining_seconds(key: ApiKey, now: datetime) -> int | None:
    """A short-lived key's Redis TTL from ``now`` (None: it has none); at least 1."""
    if key.expires_at is None:
        return None
    return max(1, math.ceil((datetime.fromisoformat(key.expires_at) - now).total_seconds()))


class ApiKeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._index = f"{prefix}:apikeys"

    @property
    def redis(self) -> Redis:
        """The connection it uses (the other per-key stores share it)."""
        return self._redis

    @property
    def prefix(self) -> str:
        return self._prefix

    def _key(self, digest: str) -> str:
        return f"{self._prefix}:apikey:{digest}"

    def _retired(self, digest: str) -> str:
        return f"{self._prefix}:apikey-retired:{digest}"

    def _retired_of(self, key_id: str) -> str:
        return f"{self._prefix}:apikey-retired-of:{key_id}"

    async def create(
        self, name: str, ttl_seconds: int | None = None, *, scopes: str | Iterable[str] = DEFAULT_SCOPES
    ) -> tuple[str, ApiKey]:
        """A new key; with ``ttl_seconds`` it expires that long from now (Redis drops it then)."""
        if ttl_seconds is not None and ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires_at = None if ttl_seconds is None else (now + timedelta(seconds=ttl_seconds)).isoformat()
        key = ApiKey(
            id=secrets.token_hex(8),
            name=check_name(name),
            created_at=now.isoformat(),
            webhook_secret=new_secret(),
            expires_at=expires_at,
            scopes=parse_scopes(scopes),
        )
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(_digest(token)), key.model_dump_json(), ex=ttl_seconds)
            pipe.hset(self._index, key.id, _digest(token))
            await pipe.execute()
        return token, key

    async def verify(self, token: str, now: datetime | None = None) -> ApiKey | None:
        """The key ``token`` is, or was until a rotation whose grace period has not ended; else None."""
        if not token or len(token) > 256:
            return None
        digest = _digest(token)
        current, retired = await self._redis.mget([self._key(digest), self._retired(digest)])
        moment = now or utcnow()
        if current is not None:
            key = ApiKey.model_validate_json(current)
            return None if key.expired(moment) else key
        if retired is None:
            return None
        old = RetiredToken.model_validate_json(retired)
        if datetime.fromisoformat(old.until) <= moment:
            return None  # Redis drops it at the same time; the clock decides between the two
        owner = await self.get(old.key_id)
        return None if owner is None or owner.expired(moment) else owner

    async def get(self, key_id: str) -> ApiKey | None:
        digest = await resolve(self._redis.hget(self._index, key_id))
        if digest is None:
            return None
        raw = await self._redis.get(self._key(_text(digest)))
        return None if raw is None else ApiKey.model_validate_json(raw)

    async def list(self) -> list[ApiKey]:
        """Every live key; the index entries of keys Redis has expired are dropped on the way."""
        entries = await resolve(self._redis.hgetall(self._index))
        keys: list[ApiKey] = []
        for key_id, digest in entries.items():
            raw = await self._redis.get(self._key(_text(digest)))
            if raw is None:
                await resolve(self._redis.hdel(self._index, key_id))
            else:
                keys.append(ApiKey.model_validate(orjson.loads(raw)))
        return keys

    async def update(
        self, key_id: str, *, name: str | None = None, scopes: str | Iterable[str] | None = None
    ) -> ApiKey | None:
        """Rename a key or set its scopes (the token stays); None when there is no such key."""
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = check_name(name)
        if scopes is not None:
            changes["scopes"] = parse_scopes(scopes)

        async def write(pipe: Pipeline, digest: str, key: ApiKey) -> ApiKey:
            updated = key.model_copy(update=changes)
            _multi(pipe)
            pipe.set(self._key(digest), updated.model_dump_json(), keepttl=True)
            return updated

        return await self._change(key_id, write)

    async def rotate(
        self, key_id: str, grace_seconds: int, *, webhook_secret: bool = False, now: datetime | None = None
    ) -> Rotation | None:
        """A new token for the same key (its id, scopes, jobs, usage and quotas stay); the old token keeps
        working ``grace_seconds`` more (0: stops at once). With ``webhook_secret`` the signing secret is
        replaced too, at once. None when there is no such key."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise ValueError(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}, got {grace_seconds}")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        moment = now or utcnow()
        until = (moment + timedelta(seconds=grace_seconds)).isoformat() if grace_seconds else None

        async def write(pipe: Pipeline, digest: str, key: ApiKey) -> ApiKey:
            changes: dict[str, object] = {"rotated_at": moment.isoformat()}
            if webhook_secret:
                changes["webhook_secret"] = new_secret()
            rotated = key.model_copy(update=changes)
            new_digest = _digest(token)
            _multi(pipe)
            pipe.set(self._key(new_digest), rotated.model_dump_json(), ex=_remaining_seconds(key, moment))
            pipe.hset(self._index, key_id, new_digest)
            pipe.delete(self._key(digest))
            if until is not None:
                retired = RetiredToken(key_id=key_id, until=until)
                pipe.set(self._retired(digest), retired.model_dump_json(), ex=grace_seconds)
                pipe.sadd(self._retired_of(key_id), digest)
                pipe.expire(self._retired_of(key_id), MAX_GRACE_SECONDS)  # outlives every grace period
            return rotated

        key = await self._change(key_id, write)
        return None if key is None else Rotation(token, key, until, webhook_secret)

    async def revoke(self, key_id: str) -> bool:
        """Its token and any rotated-out ones in their grace period stop working now."""

        async def write(pipe: Pipeline, digest: str, key: ApiKey) -> ApiKey:
            retired = await resolve(pipe.smembers(self._retired_of(key_id)))
            _multi(pipe)
            pipe.delete(self._key(digest), self._retired_of(key_id))
            for old in retired:
                pipe.delete(self._retired(_text(old)))
            pipe.hdel(self._index, key_id)
            return key

        if await self._change(key_id, write) is not None:
            return True
        # A key Redis expired (or a stale index entry): nothing works any more; drop what is left.
        return bool(await resolve(self._redis.hdel(self._index, key_id)))

    async def _change(
        self, key_id: str, write: Callable[[Pipeline, str, ApiKey], Awaitable[ApiKey]]
    ) -> ApiKey | None:
        """Run ``write`` (which queues its commands after ``pipe.multi()``) on the key's current digest and
        record, WATCHing both: retried when another change got in between. None: no such key."""

        async def attempt(pipe: Pipeline) -> ApiKey | None:
            await pipe.watch(self._index)
            digest = await resolve(pipe.hget(self._index, key_id))
            if digest is None:
                return None
            record = self._key(_text(digest))
            await pipe.watch(record)
            raw = await pipe.get(record)
            if raw is None:
                return None
            return await write(pipe, _text(digest), ApiKey.model_validate_json(raw))

        result: ApiKey | None = await self._redis.transaction(attempt, value_from_callable=True)
        return result
