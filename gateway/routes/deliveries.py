"""Webhook deliveries of a job or a bulk job: ``GET …/deliveries`` lists every attempt (URL, status,
latency, error: nothing of the images), ``POST …/deliveries`` sends the event again.

A redelivery is the same event under the same ``webhook-id`` (receivers deduplicate on it), signed anew,
retried like the first delivery; one of an earlier number still retrying stops (shared/deliveries.py).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import authenticate
from gateway.backends import redis_errors
from gateway.responses import json_response
from gateway.routes.bulk import bulk_path, owned_bulk
from gateway.routes.jobs import job_path
from gateway.state import REDIS, SETTINGS, SUBMITTER
from shared.bulk import BulkStore
from shared.deliveries import DeliveryAttempt, DeliveryStore, Kind, enqueue_delivery
from shared.errors import ConflictError

routes = web.RouteTableDef()


class DeliveriesLinks(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", examples=["/v1/jobs/3f2a…/deliveries"])


class Deliveries(BaseModel):
    """Every attempt of the webhook deliveries of a job or bulk job (the last 50), oldest first."""

    deliveries: list[DeliveryAttempt]
    links: DeliveriesLinks


class RedeliveryLinks(BaseModel):
    deliveries: str = Field(description="Where its attempts appear.")


class RedeliveryAccepted(BaseModel):
    """``POST …/deliveries``'s 202: the event is queued to be sent again."""

    redelivery: int = Field(description="Its number: attempts of this redelivery carry it.")
    status: Literal["queued"]
    links: RedeliveryLinks


def _listing(kind: Kind, subject_id: str) -> str:
    return (job_path(subject_id) if kind == "job" else bulk_path(subject_id)) + "/deliveries"


async def _list(request: web.Request, kind: Kind, subject_id: str) -> web.Response:
    store = DeliveryStore(request.config_dict[REDIS], request.config_dict[SETTINGS].redis.prefix)
    with redis_errors("read the deliveries"):
        attempts = await store.attempts(kind, subject_id)
    body = Deliveries(deliveries=attempts, links=DeliveriesLinks(self_=_listing(kind, subject_id)))
    return json_response(body.model_dump(mode="json", by_alias=True))


async def _redeliver(request: web.Request, kind: Kind, subject_id: str, url: str, owner: str) -> web.Response:
    settings = request.config_dict[SETTINGS]
    # One more queued job: the queue's limits apply; not the key's credits (a redelivery is not an image).
    await request.config_dict[SUBMITTER].admit(owner, quota=False)
    pool = request.config_dict[REDIS]
    with redis_errors("queue the redelivery"):
        number = await DeliveryStore(pool, settings.redis.prefix).next_redelivery(kind, subject_id)
        queue = settings.redis.queue_name
        await enqueue_delivery(pool, subject_id, url, queue, kind=kind, redelivery=number)
    listing = _listing(kind, subject_id)
    accepted = RedeliveryAccepted(
        redelivery=number, status="queued", links=RedeliveryLinks(deliveries=listing)
    )
    return json_response(accepted.model_dump(), status=202, headers={"Location": listing})


@routes.get("/v1/jobs/{job_id}/deliveries")
async def job_deliveries(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    return await _list(request, "job", record.id)


@routes.post("/v1/jobs/{job_id}/deliveries")
async def redeliver_job(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    if not record.status.finished:
        raise ConflictError(f"the job is {record.status.value}; its webhook is sent when it has finished")
    store = DeliveryStore(request.config_dict[REDIS], request.config_dict[SETTINGS].redis.prefix)
    with redis_errors("read the deliveries"):
        attempts = await store.attempts("job", record.id)
    if not attempts:  # the URL is known from the attempts: the job record does not keep it
        raise ConflictError(
            "no webhook delivery to repeat: the job has no callback_url, or its delivery has not been tried"
            " yet",
            code="NO_DELIVERY",
        )
    return await _redeliver(request, "job", record.id, attempts[-1].url, key.id)


@routes.get("/v1/bulk/{bulk_id}/deliveries")
async def bulk_deliveries(request: web.Request) -> web.Response:
    key = await authenticate(request)
    bulks = BulkStore(request.config_dict[REDIS], request.config_dict[SETTINGS].redis.prefix)
    with redis_errors("read the bulk job"):
        record = await owned_bulk(bulks, request.match_info["bulk_id"], key.id)
    return await _list(request, "bulk", record.id)


@routes.post("/v1/bulk/{bulk_id}/deliveries")
async def redeliver_bulk(request: web.Request) -> web.Response:
    key = await authenticate(request)
    bulks = BulkStore(request.config_dict[REDIS], request.config_dict[SETTINGS].redis.prefix)
    with redis_errors("read the bulk job"):
        record = await owned_bulk(bulks, request.match_info["bulk_id"], key.id)
        counters = await bulks.progress.counters(record.id)
    if counters.finished_ms is None:
        raise ConflictError("the bulk job has not finished; bulk.finished is sent when it has")
    if record.callback_url is None:
        raise ConflictError("the bulk job has no callback_url", code="NO_DELIVERY")
    return await _redeliver(request, "bulk", record.id, record.callback_url, key.id)
