"""Webhook deliveries: every attempt recorded, retries paced and bounded, redeliveries on request.

A delivery is one event (``job.succeeded|failed`` of a job, ``bulk.finished`` of a bulk job) sent to its
``callback_url`` by the ``deliver_webhook`` task (workers/notify.py), retried until it is delivered, the
receiver refuses it for good (410 Gone) or ``VEIL_WEBHOOKS__RETRY_FOR_SECONDS`` have passed. Each attempt
leaves one :class:`DeliveryAttempt` in a capped Redis list per subject (its last :data:`KEPT_ATTEMPTS`, kept
as long as a job record), which the owner reads at ``GET /v1/jobs/<id>/deliveries``. An attempt holds the
URL, the HTTP status, the latency and a short error, never the body sent (the body is built from the
owner's record at each attempt; only the subject's id and the URL are queued).

A redelivery (``POST …/deliveries``) is the same event again, under the same ``webhook-id`` so receivers
deduplicate it; it gets the next *redelivery number*, and a delivery of an earlier number still retrying
stops at its next attempt (:meth:`DeliveryStore.redelivery`), so one subject has one delivery going on.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from arq.connections import ArqRedis
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from shared.jobstore import RECORD_TTL_SECONDS
from shared.redisutil import resolve
from shared.settings import WebhookSettings

DELIVER_FUNCTION = "deliver_webhook"
KEPT_ATTEMPTS = 50
ERROR_CHARS = 200  # of an error text, a receiver's answer included
# arq drops a queued job whose key has expired: longer than any retry window (at most the record's 48 h).
ARQ_EXPIRES = timedelta(seconds=RECORD_TTL_SECONDS + 24 * 3600)

Kind = Literal["job", "bulk"]


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"  # a 2xx answer
    RETRYING = "retrying"  # failed; tried again at next_attempt_at
    FAILED = "failed"  # not retried: 410 Gone, the SSRF guard, a revoked key, a record gone
    GAVE_UP = "gave_up"  # failed, and the retry window is over


class DeliveryAttempt(BaseModel):
    """One attempt of a webhook delivery, as its owner sees it."""

    redelivery: int = Field(description="0: the delivery sent when the job ended; n: the n-th redelivery.")
    attempt: int = Field(description="1 for the first attempt of this (re)delivery.")
    at: datetime = Field(description="When the attempt was made.")
    event: str = Field(examples=["job.succeeded"])
    webhook_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    url: str
    status: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    latency_ms: float | None = Field(description="From sending to the answer's headers; null: none.")
    error: str | None = Field(
        description="Why it failed, in short (at most 200 characters of an answer); null when delivered."
    )
    outcome: DeliveryOutcome
    next_attempt_at: datetime | None = Field(default=None, description="When retrying: the next attempt.")


def retry_delay(attempt: int, settings: WebhookSettings, rng: random.Random | None = None) -> float:
    """Seconds before the attempt after ``attempt`` (1-based): exponential, capped, and jittered to a random
    50-100 % so that many receivers' retries spread out; the fixed half keeps the count of attempts in a
    window bounded (about 40 in 24 h at the defaults)."""
    ceiling = min(settings.retry_max_delay_seconds, settings.retry_first_delay_seconds * 2.0 ** (attempt - 1))
    jitter = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return ceiling * jitter


def arq_job_id(kind: Kind, subject_id: str, redelivery: int = 0) -> str:
    """arq's id of a (re)delivery: enqueueing the same one twice is a no-op."""
    base = f"webhook:{subject_id}" if kind == "job" else f"webhook:bulk:{subject_id}"
    return base if redelivery == 0 else f"{base}:r{redelivery}"


async def enqueue_delivery(
    pool: ArqRedis,
    subject_id: str,
    callback_url: str,
    queue_name: str,
    *,
    kind: Kind = "job",
    redelivery: int = 0,
) -> None:
    """Queue the delivery of ``subject_id``'s event to ``callback_url`` (its id only: the body is built at
    delivery, from the record)."""
    await pool.enqueue_job(
        DELIVER_FUNCTION,
        subject_id,
        callback_url,
        kind,
        redelivery,
        _job_id=arq_job_id(kind, subject_id, redelivery),
        _queue_name=queue_name,
        _expires=ARQ_EXPIRES,
    )


class DeliveryStore:
    """Per subject: its attempts (a list, the newest last) and its latest redelivery number."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, kind: Kind, subject_id: str) -> str:
        return f"{self._prefix}:deliveries:{kind}:{subject_id}"

    async def add(self, kind: Kind, subject_id: str, attempt: DeliveryAttempt) -> None:
        key = self._key(kind, subject_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, attempt.model_dump_json())
            pipe.ltrim(key, -KEPT_ATTEMPTS, -1)
            pipe.expire(key, RECORD_TTL_SECONDS)
            await pipe.execute()

    async def attempts(self, kind: Kind, subject_id: str) -> list[DeliveryAttempt]:
        raw = await resolve(self._redis.lrange(self._key(kind, subject_id), 0, -1))
        return [DeliveryAttempt.model_validate_json(item) for item in raw]

    async def redelivery(self, kind: Kind, subject_id: str) -> int:
        """The latest redelivery number (0: none asked for)."""
        raw = await self._redis.get(self._key(kind, subject_id) + ":redelivery")
        return 0 if raw is None else int(raw)

    async def next_redelivery(self, kind: Kind, subject_id: str) -> int:
        key = self._key(kind, subject_id) + ":redelivery"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, RECORD_TTL_SECONDS)
            number, _ = await pipe.execute()
        return int(number)
