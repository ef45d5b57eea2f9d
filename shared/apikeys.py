"""API keys: random tokens shown once, stored in Redis only as their SHA-256.

A key may be short-lived (``veil up``'s demo key): its record then carries ``expires_at`` and a Redis TTL
to match, so Redis forgets it on its own; ``verify`` checks the time as well.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.jobs import utcnow
from shared.redisutil import resolve
from shared.webhooks import new_secret

KEY_PREFIX = "veil_"


class ApiKey(BaseModel):
    id: str
    name: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())
    # Signs this key's webhook deliveries (shared/webhooks.py); shown once, with the key. ``whsec_`` and
    # base64 of the key bytes (Standard Webhooks); keys created before spell it in URL-safe base64.
    webhook_secret: str | None = None
    # Short-lived keys only (ISO 8601, UTC): past it the key is refused, and Redis has dropped it.
    expires_at: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) <= (now or utcnow())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, digest: str) -> str:
        return f"{self._prefix}:apikey:{digest}"

    async def create(self, name: str, ttl_seconds: int | None = None) -> tuple[str, ApiKey]:
        """A new key; with ``ttl_seconds`` it expires that long from now (Redis drops it then)."""
        if ttl_seconds is not None and ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires_at = None if ttl_seconds is None else (now + timedelta(seconds=ttl_seconds)).isoformat()
        key = ApiKey(
            id=secrets.token_hex(8),
            name=name,
            created_at=now.isoformat(),
            webhook_secret=new_secret(),
            expires_at=expires_at,
        )
        await self._redis.set(self._key(_digest(token)), key.model_dump_json(), ex=ttl_seconds)
        await resolve(self._redis.hset(f"{self._prefix}:apikeys", key.id, _digest(token)))
        return token, key

    async def verify(self, token: str) -> ApiKey | None:
        if not token or len(token) > 256:
            return None
        raw = await self._redis.get(self._key(_digest(token)))
        if raw is None:
            return None
        key = ApiKey.model_validate_json(raw)
        return None if key.expired() else key

    async def get(self, key_id: str) -> ApiKey | None:
        digest = await resolve(self._redis.hget(f"{self._prefix}:apikeys", key_id))
        if digest is None:
            return None
        raw = await self._redis.get(self._key(digest.decode() if isinstance(digest, bytes) else digest))
        return None if raw is None else ApiKey.model_validate_json(raw)

    async def list(self) -> list[ApiKey]:
        """Every live key; the index entries of keys Redis has expired are dropped on the way."""
        index = f"{self._prefix}:apikeys"
        entries = await resolve(self._redis.hgetall(index))
        keys: list[ApiKey] = []
        for key_id, digest in entries.items():
            raw = await self._redis.get(self._key(digest.decode() if isinstance(digest, bytes) else digest))
            if raw is None:
                await resolve(self._redis.hdel(index, key_id))
            else:
                keys.append(ApiKey.model_validate(orjson.loads(raw)))
        return keys

    async def revoke(self, key_id: str) -> bool:
        digest = await resolve(self._redis.hget(f"{self._prefix}:apikeys", key_id))
        if digest is None:
            return False
        digest_s = digest.decode() if isinstance(digest, bytes) else digest
        await self._redis.delete(self._key(digest_s))
        await resolve(self._redis.hdel(f"{self._prefix}:apikeys", key_id))
        return True
