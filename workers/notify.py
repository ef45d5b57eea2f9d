"""Webhook delivery: when a job with a ``callback_url`` ends (or a bulk job finishes), POST its JSON,
signed, to that URL, and record every attempt (shared/deliveries.py).

Signed per Standard Webhooks (shared/webhooks.py): every attempt of one event, redeliveries included, has
the same ``webhook-id``, and a fresh ``webhook-timestamp`` and signature.

Runs as its own arq job (``deliver_webhook``) so a slow receiver never holds up blurring. Any answer but a
2xx is retried (Standard Webhooks), as are timeouts and connection errors, with a jittered exponential
backoff (``retry_delay``) through arq's ``Retry``, until ``VEIL_WEBHOOKS__RETRY_FOR_SECONDS`` after the
delivery was queued; then the delivery is given up. 410 Gone stops it at once: the receiver asks not to be
called again. Connections go through the same SSRF guard as the gateway's URL fetches, checked again at
every attempt (DNS may have changed since the job was submitted); a refusal is final.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from arq import Retry
from redis.asyncio import Redis
from yarl import URL

from shared.apikeys import ApiKeyStore
from shared.bulk import BULK_FINISHED, BulkStore, summary
from shared.deliveries import (
    DELIVER_FUNCTION,
    ERROR_CHARS,
    DeliveryAttempt,
    DeliveryOutcome,
    DeliveryStore,
    Kind,
    enqueue_delivery,
    retry_delay,
)
from shared.errors import UpstreamFetchError
from shared.jobstore import JobStore
from shared.settings import Settings
from shared.urlguard import UrlAllowlist, check_url, create_guarded_session
from shared.webhooks import DELIVERY_HEADER, EVENT_HEADER, message_id, signed_headers
from workers.context import worker_context

__all__ = ["DELIVER_FUNCTION", "MAX_ATTEMPTS", "deliver", "deliver_webhook", "enqueue_delivery"]

# arq's max_tries for deliveries: more than any retry window allows, so that the window ends retries, never
# arq (which would drop the delivery without recording why).
MAX_ATTEMPTS = 1_000_000
TIMEOUT_SECONDS = 10.0
GONE = 410

log = logging.getLogger("veil.webhooks")


@dataclass(frozen=True)
class Delivery:
    """One (re)delivery of a subject's event: what the arq job carries, and when it was queued."""

    kind: Kind
    subject_id: str
    callback_url: str
    queued_at: float  # Unix time: retries end VEIL_WEBHOOKS__RETRY_FOR_SECONDS after it
    redelivery: int = 0


@dataclass(frozen=True)
class Message:
    event: str
    msg_id: str
    body: bytes
    secret: str


@dataclass
class Answer:
    status: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    final: bool = False  # not worth another attempt, whatever the window


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_CHARS else flat[: ERROR_CHARS - 1] + "…"


async def _message(settings: Settings, redis: Redis, delivery: Delivery) -> Message | str:
    """The signed event, built now from the owner's record; or why there is none to send."""
    prefix = settings.redis.prefix
    owner: str
    if delivery.kind == "job":
        record = await JobStore(redis, prefix).get(delivery.subject_id)
        if record is None:
            return "the job's record has expired"
        event = f"job.{record.status.value}"
        owner, payload = record.owner, {"event": event, "job": record.public()}
    else:
        bulks = BulkStore(redis, prefix)
        bulk = await bulks.get(delivery.subject_id)
        if bulk is None:
            return "the bulk job's record has expired"
        event = BULK_FINISHED
        counters = await bulks.progress.counters(bulk.id)
        owner, payload = bulk.owner, {"event": event, "bulk": summary(bulk, counters)}
    key = await ApiKeyStore(redis, prefix).get(owner)
    if key is None or not key.webhook_secret:
        return "the API key was revoked or has no webhook secret"
    msg_id = message_id(delivery.subject_id, event)
    return Message(event=event, msg_id=msg_id, body=orjson.dumps(payload), secret=key.webhook_secret)


async def post_signed(session: aiohttp.ClientSession, url: str, message: Message, *, now: int) -> Answer:
    """POST one attempt; the answer's status and, unless 2xx, the start of its body."""
    headers = {
        "Content-Type": "application/json",
        **signed_headers(message.secret, message.msg_id, now, message.body),
        EVENT_HEADER: message.event,
        DELIVERY_HEADER: uuid.uuid4().hex,
    }
    sent = time.perf_counter()
    async with (
        asyncio.timeout(TIMEOUT_SECONDS),
        session.post(url, data=message.body, headers=headers, allow_redirects=False) as response,
    ):
        answer = Answer(status=response.status, latency_ms=round((time.perf_counter() - sent) * 1000, 1))
        if not 200 <= response.status < 300:
            text = (await response.content.read(ERROR_CHARS)).decode("utf-8", "replace")
            answer.error = _short(f"HTTP {response.status}" + (f": {text}" if text.strip() else ""))
        return answer


async def _attempt(settings: Settings, url: str, message: Message) -> Answer:
    allowlist = UrlAllowlist(settings.effective_url_allowlist())
    sent = time.perf_counter()
    try:
        check_url(URL(url), allowlist)
        async with create_guarded_session(allowlist, user_agent="Veil webhooks", accept="*/*") as session:
            answer = await post_signed(session, url, message, now=int(time.time()))
    except UpstreamFetchError as exc:  # the URL, or the address it resolves to, is refused: final
        return Answer(error=_short(f"refused by the SSRF guard: {exc.message}"), final=True)
    except TimeoutError:
        return Answer(error=f"timed out after {TIMEOUT_SECONDS:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        latency = round((time.perf_counter() - sent) * 1000, 1)
        return Answer(latency_ms=latency, error=_short(f"{type(exc).__name__}: {exc}"))
    answer.final = answer.status == GONE  # the receiver asks not to be called again
    return answer


async def deliver(
    settings: Settings, redis: Redis, delivery: Delivery, attempt: int
) -> DeliveryAttempt | None:
    """One attempt: send, record it and return the record; raise :class:`arq.Retry` after recording it
    when it is to be tried again. ``None``: a later redelivery of the same event replaced this one."""
    store = DeliveryStore(redis, settings.redis.prefix)
    kind, subject = delivery.kind, delivery.subject_id
    if await store.redelivery(kind, subject) > delivery.redelivery:
        return None
    started = datetime.now(UTC)
    message = await _message(settings, redis, delivery)
    if isinstance(message, str):  # nothing to send, now or later
        answer, event, msg_id = Answer(error=message, final=True), "", ""
    else:
        answer = await _attempt(settings, delivery.callback_url, message)
        event, msg_id = message.event, message.msg_id
    outcome, next_at = _outcome(settings, delivery, attempt, answer, datetime.now(UTC))
    record = DeliveryAttempt(
        redelivery=delivery.redelivery,
        attempt=attempt,
        at=started,
        event=event,
        webhook_id=msg_id,
        url=delivery.callback_url,
        status=answer.status,
        latency_ms=answer.latency_ms,
        error=answer.error,
        outcome=outcome,
        next_attempt_at=next_at,
    )
    await store.add(kind, subject, record)
    if next_at is not None:
        log.warning("webhook for %s %s, attempt %d: %s; retrying", kind, subject, attempt, answer.error)
        raise Retry(defer=max(timedelta(0), next_at - datetime.now(UTC)))
    return record


def _outcome(
    settings: Settings, delivery: Delivery, attempt: int, answer: Answer, now: datetime
) -> tuple[DeliveryOutcome, datetime | None]:
    """What the attempt that just ended comes to, and when the next one is due (only when retrying)."""
    if answer.status is not None and 200 <= answer.status < 300:
        return DeliveryOutcome.DELIVERED, None
    if answer.final:
        return DeliveryOutcome.FAILED, None
    wait = retry_delay(attempt, settings.webhooks)
    deadline = delivery.queued_at + settings.webhooks.retry_for_seconds
    if now.timestamp() + wait > deadline:
        return DeliveryOutcome.GAVE_UP, None
    return DeliveryOutcome.RETRYING, now + timedelta(seconds=wait)


async def deliver_webhook(
    ctx: dict[str, Any], subject_id: str, callback_url: str, kind: Kind = "job", redelivery: int = 0
) -> str:
    """arq task. Settings and Redis come from the worker context built at start-up; arq's ``enqueue_time``
    (kept across its retries) starts the retry window."""
    state = worker_context(ctx)
    queued = ctx.get("enqueue_time")
    delivery = Delivery(
        kind=kind,
        subject_id=subject_id,
        callback_url=callback_url,
        queued_at=queued.timestamp() if isinstance(queued, datetime) else time.time(),
        redelivery=redelivery,
    )
    record = await deliver(state.settings, state.redis, delivery, int(ctx.get("job_try", 1)))
    if record is None:
        outcome = "replaced by a redelivery"
    else:
        outcome = record.outcome.value + (f": {record.error}" if record.error else f" ({record.status})")
    log.info("webhook for %s %s: %s", kind, subject_id, outcome)
    return outcome
