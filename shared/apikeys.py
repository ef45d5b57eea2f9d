"""API keys: random tokens shown once, stored in Redis only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets

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


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, digest: str) -> str:
        return f"{self._prefix}:apikey:{digest}"

    async def create(self, name: str) -> tuple[str, ApiKey]:
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=secrets.token_hex(8), name=name, webhook_secret=new_secret())
        await self._redis.set(self._key(_digest(token)), key.model_dump_json())
        await resolve(self._redis.hset(f"{self._prefix}:apikeys", key.id, _digest(token)))
        return token, key

    async def verify(self, token: str) -> ApiKey | None:
        if not token or len(token) > 256:
            return None
        raw = await self._redis.get(self._key(_digest(token)))
        return None if raw is None else ApiKey.model_validate_json(raw)

    async def get(self, key_id: str) -> ApiKey | None:
        digest = await resolve(self._redis.hget(f"{self._prefix}:apikeys", key_id))
        if digest is None:
            return None
        raw = await self._redis.get(self._key(digest.decode() if isinstance(digest, bytes) else digest))
        return None if raw is None else ApiKey.model_validate_json(raw)

    async def list(self) -> list[ApiKey]:
        digests = await resolve(self._redis.hvals(f"{self._prefix}:apikeys"))
        keys: list[ApiKey] = []
        for digest in digests:
            raw = await self._redis.get(self._key(digest.decode() if isinstance(digest, bytes) else digest))
            if raw is not None:
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
