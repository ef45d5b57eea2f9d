"""Webhook delivery: when a job with a ``callback_url`` ends, POST its JSON, signed, to that URL.

Signed per Standard Webhooks (shared/webhooks.py): every attempt of one delivery has the same
``webhook-id``, and a fresh ``webhook-timestamp`` and signature.

Runs as its own arq job (``deliver_webhook``) so a slow receiver never holds up blurring, and retries with
backoff on failure. Connections go through the same SSRF guard as the gateway's URL fetches, checked again
at delivery time (DNS may have changed since the job was submitted).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiohttp
import orjson
from arq import Retry
from arq.connections import ArqRedis
from redis.asyncio import Redis
from yarl import URL

from shared.apikeys import ApiKeyStore
from shared.errors import UpstreamFetchError
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.urlguard import UrlAllowlist, check_url, create_guarded_session
from shared.webhooks import DELIVERY_HEADER, EVENT_HEADER, message_id, signed_headers
from workers.context import worker_context

DELIVER_FUNCTION = "deliver_webhook"
MAX_ATTEMPTS = 5
TIMEOUT_SECONDS = 10.0

log = logging.getLogger("veil.webhooks")


def backoff_seconds(attempt: int) -> int:
    """2, 4, 8, 16 s between attempts: a receiver that restarts gets about half a minute."""
    return int(2**attempt)


async def enqueue_delivery(pool: ArqRedis, job_id: str, callback_url: str, queue_name: str) -> None:
    """Queue one delivery per job (arq's job id makes a repeated enqueue a no-op)."""
    delivery_id = f"webhook:{job_id}"
    await pool.enqueue_job(
        DELIVER_FUNCTION, job_id, callback_url, _job_id=delivery_id, _queue_name=queue_name
    )


async def post_signed(
    session: aiohttp.ClientSession, url: str, body: bytes, *, secret: str, msg_id: str, event: str, now: int
) -> int:
    headers = {
        "Content-Type": "application/json",
        **signed_headers(secret, msg_id, now, body),
        EVENT_HEADER: event,
        DELIVERY_HEADER: uuid.uuid4().hex,
    }
    async with (
        asyncio.timeout(TIMEOUT_SECONDS),
        session.post(url, data=body, headers=headers, allow_redirects=False) as response,
    ):
        return response.status


async def deliver(settings: Settings, redis: Redis, job_id: str, callback_url: str, attempt: int) -> str:
    """One delivery attempt. Returns what happened; raises :class:`arq.Retry` while worth retrying."""
    prefix = settings.redis.prefix
    record = await JobStore(redis, prefix).get(job_id)
    if record is None:
        return "job record expired"
    key = await ApiKeyStore(redis, prefix).get(record.owner)
    if key is None or not key.webhook_secret:
        return "key revoked or without a webhook secret: not delivered"
    allowlist = UrlAllowlist(settings.effective_url_allowlist())
    try:
        check_url(URL(callback_url), allowlist)
    except UpstreamFetchError as exc:
        return f"refused: {exc.message}"
    event = f"job.{record.status.value}"
    body = orjson.dumps({"event": event, "job": record.public()})
    try:
        async with create_guarded_session(allowlist, user_agent="Veil webhooks", accept="*/*") as session:
            status = await post_signed(
                session,
                callback_url,
                body,
                secret=key.webhook_secret,
                msg_id=message_id(job_id, event),
                event=event,
                now=int(time.time()),
            )
    except UpstreamFetchError as exc:  # the guard refused the resolved address
        return f"refused: {exc.message}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        outcome = f"failed: {type(exc).__name__}: {exc}"
    else:
        if 200 <= status < 300:
            return f"delivered ({status})"
        outcome = f"receiver answered {status}"
        if 400 <= status < 500 and status not in (408, 429):
            return outcome  # the receiver rejects it; retrying will not change its mind
    if attempt < MAX_ATTEMPTS:
        log.warning("webhook for job %s: %s; retrying", job_id, outcome)
        raise Retry(defer=backoff_seconds(attempt))
    return f"gave up after {attempt} attempts: {outcome}"


async def deliver_webhook(ctx: dict[str, Any], job_id: str, callback_url: str) -> str:
    """arq task. Settings and Redis come from the worker context built at start-up."""
    state = worker_context(ctx)
    outcome = await deliver(state.settings, state.redis, job_id, callback_url, int(ctx.get("job_try", 1)))
    log.info("webhook for job %s: %s", job_id, outcome)
    return outcome
