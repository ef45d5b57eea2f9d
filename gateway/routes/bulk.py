"""Bulk jobs: ``POST /v1/bulk`` blurs every image under a bucket prefix; ``GET /v1/bulk/{id}`` reports
its progress (from counters: :mod:`shared.bulk_progress`) and a page of its children; ``DELETE`` cancels
what has not started.

The gateway only checks the request and records it; a worker lists the objects (``expand_bulk``) and
queues one ordinary job per image, so a bucket of 10 000 photos never holds an HTTP request open.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web

from gateway.auth import authenticate
from gateway.backends import redis_errors
from gateway.callbacks import parse_callback_url
from gateway.inputs import media_type, read_body
from gateway.options import parse_blur_options
from gateway.responses import json_response
from gateway.state import REDIS, SETTINGS, SUBMITTER
from shared.bulk import (
    EXPAND_FUNCTION,
    MAX_OBJECTS,
    PRIVATE_FIELDS,
    BulkOutput,
    BulkRecord,
    BulkSource,
    BulkStatus,
    BulkStore,
    is_done,
    reconcile,
    summary,
    view_status,
)
from shared.bulk_progress import BulkProgress, Counters
from shared.errors import ConflictError, NotFoundError, ValidationError
from shared.jobs import JobError, JobStatus, PublicResult
from shared.objectkeys import check_prefix, folders_overlap, is_folder
from shared.settings import Settings

routes = web.RouteTableDef()
M = TypeVar("M", bound=pydantic.BaseModel)

BODY_LIMIT = 64 * 1024  # a bulk request is a few fields, never an image


class BulkFields(pydantic.BaseModel):
    """``POST /v1/bulk``'s own fields; the blur options of every child job sit beside them."""

    model_config = pydantic.ConfigDict(extra="forbid")

    s3: BulkSource = pydantic.Field(description="Where the originals are: a readable bucket and a prefix.")
    output: BulkOutput | None = pydantic.Field(
        default=None, description="Where blurred copies go (besides each job's result): a writable bucket."
    )
    callback_url: str | None = pydantic.Field(
        default=None, description="Webhook for each child job, and `bulk.finished` once they all ended."
    )
    limit: int = pydantic.Field(
        default=MAX_OBJECTS, ge=1, le=MAX_OBJECTS, description="At most this many images."
    )


_OWN_FIELDS = frozenset(BulkFields.model_fields)


class BulkLink(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)

    self_: str = pydantic.Field(alias="self")


class BulkLinks(BulkLink):
    next: str | None = pydantic.Field(default=None, description="The next page of jobs, while there is one.")


class BulkAccepted(pydantic.BaseModel):
    id: str
    status: BulkStatus
    links: BulkLink


class BulkCounts(pydantic.BaseModel):
    """The same numbers as ``progress`` (kept for clients of before it)."""

    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class BulkChild(pydantic.BaseModel):
    id: str
    key: str = pydantic.Field(description="The original's key in the source bucket.")
    status: JobStatus
    result: PublicResult | None = None
    error: JobError | None = None


_PUBLIC_FIELDS: dict[str, Any] = {
    name: (field.annotation, field)
    for name, field in BulkRecord.model_fields.items()
    if name not in PRIVATE_FIELDS
}
BulkSummary = pydantic.create_model(
    "BulkSummary",
    __doc__="A bulk job as its owner sees it (and as `bulk.finished` carries it).",
    **_PUBLIC_FIELDS,
    cancelled_at=(datetime | None, pydantic.Field(description="When its owner cancelled it.")),
    finished_at=(datetime | None, pydantic.Field(description="When its last child ended.")),
    counts=(BulkCounts, ...),
    progress=(BulkProgress, ...),
)
BulkView = pydantic.create_model(
    "BulkView",
    __base__=BulkSummary,
    __doc__="A bulk job and one page of its child jobs.",
    jobs=(list[BulkChild], ...),
    links=(BulkLinks, ...),
)


def bulk_path(bulk_id: str) -> str:
    return f"/v1/bulk/{bulk_id}"


def _model(model: type[M], value: object, field: str) -> M:
    if not isinstance(value, dict):
        raise ValidationError(f'{field} must be an object like {{"bucket": "...", "prefix": "..."}}')
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        raise ValidationError(f"{field}: {exc.errors(include_url=False)[0]['msg']}") from exc


def parse_bulk(body: dict[str, Any], settings: Settings, owner: str) -> BulkRecord:
    """The bulk job a request asks for, refused (400) unless both prefixes are canonical
    (:mod:`shared.objectkeys`), the buckets are the operator's readable / writable ones and never Veil's
    own, and the blurred copies cannot land on the originals."""
    s3 = settings.s3
    source = _model(BulkSource, body.get("s3"), "s3")
    check_prefix(source.prefix, "s3.prefix")
    if source.bucket == s3.bucket:
        raise ValidationError(f"s3.bucket: Veil's own bucket {source.bucket!r} cannot be used as input")
    if source.bucket not in s3.readable_buckets:
        raise ValidationError(f"bucket {source.bucket!r} is not readable by Veil (VEIL_S3__READABLE_BUCKETS)")
    output = None
    if body.get("output") is not None:
        output = _model(BulkOutput, body["output"], "output")
        check_prefix(output.prefix, "output.prefix")
        if output.bucket == s3.bucket:
            raise ValidationError(f"output.bucket: Veil's own bucket {output.bucket!r} cannot be written to")
        if output.bucket not in s3.writable_buckets:
            raise ValidationError(
                f"bucket {output.bucket!r} is not writable by Veil (VEIL_S3__WRITABLE_BUCKETS)"
            )
        if not (is_folder(source.prefix) and is_folder(output.prefix)):
            raise ValidationError(
                "with an output, s3.prefix and output.prefix must each be empty or end with '/':"
                " each blurred copy keeps its key's path below the source folder"
            )
        if folders_overlap(output.bucket, output.prefix, source.bucket, source.prefix):
            raise ValidationError(
                "output must not overwrite the originals: use another bucket, or a folder that neither"
                " lies inside s3.prefix nor contains it"
            )
    limit = body.get("limit", MAX_OBJECTS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_OBJECTS:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_OBJECTS}")
    options = parse_blur_options({k: v for k, v in body.items() if k not in _OWN_FIELDS})
    return BulkRecord(
        id=uuid.uuid4().hex,
        owner=owner,
        source=source,
        output=output,
        options=options,
        callback_url=parse_callback_url(body.get("callback_url"), settings),
        limit=limit,
    )


@routes.post("/v1/bulk")
async def create_bulk(request: web.Request) -> web.Response:
    key = await authenticate(request)
    settings = request.config_dict[SETTINGS]
    if media_type(request) != "application/json":
        raise ValidationError("POST /v1/bulk takes a JSON body")
    try:
        body = orjson.loads(await read_body(request, BODY_LIMIT))
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    record = parse_bulk(body, settings, key.id)
    await request.config_dict[SUBMITTER].admit(key.id)  # one bulk job counts as one submission
    pool = request.config_dict[REDIS]
    with redis_errors("queue the bulk job"):
        await BulkStore(pool, settings.redis.prefix).put(record)
        expand_id, queue_name = f"bulk:{record.id}", settings.redis.queue_name
        await pool.enqueue_job(EXPAND_FUNCTION, record.id, _job_id=expand_id, _queue_name=queue_name)
    location = bulk_path(record.id)
    accepted = BulkAccepted(id=record.id, status=record.status, links=BulkLink(self_=location))
    return json_response(accepted.model_dump(by_alias=True), status=202, headers={"Location": location})


async def owned_bulk(bulks: BulkStore, bulk_id: str, owner: str) -> BulkRecord:
    """The owner's bulk job; :class:`NotFoundError` for unknown ones and other owners' alike."""
    record = await bulks.get(bulk_id)
    if record is None or record.owner != owner:
        raise NotFoundError("no such bulk job")
    return record


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise ValidationError("offset and limit must be whole numbers") from exc
    if offset < 0 or not 1 <= limit <= 1000:
        raise ValidationError("offset must be ≥ 0 and limit from 1 to 1000")
    return offset, limit


async def _view(
    bulks: BulkStore, record: BulkRecord, counters: Counters, offset: int, limit: int
) -> dict[str, Any]:
    """The bulk JSON with one page of its children (only that page's records are read)."""
    with redis_errors("read the bulk job"):
        children = await bulks.children(record.id)
        shown = children[offset : offset + limit]
        records = await bulks.jobs.get_many([job_id for job_id, _ in shown])
    page = []
    for (job_id, source_key), child in zip(shown, records, strict=True):
        public = child.public() if child else {"status": "queued"}
        page.append(
            {
                "id": job_id,
                "key": source_key,
                "status": public["status"],
                "result": public.get("result"),
                "error": public.get("error"),
            }
        )
    body: dict[str, Any] = {
        **summary(record, counters),
        "jobs": page,
        "links": {"self": bulk_path(record.id)},
    }
    if offset + limit < len(children):
        body["links"]["next"] = f"{bulk_path(record.id)}?offset={offset + limit}&limit={limit}"
    return body


@routes.get("/v1/bulk/{bulk_id}")
async def get_bulk(request: web.Request) -> web.Response:
    key = await authenticate(request)
    settings = request.config_dict[SETTINGS]
    offset, limit = _paging(request)
    pool = request.config_dict[REDIS]
    bulks = BulkStore(pool, settings.redis.prefix)
    with redis_errors("read the bulk job"):
        record = await owned_bulk(bulks, request.match_info["bulk_id"], key.id)
        counters = await reconcile(bulks, pool, settings.redis.queue_name, record.id)
    return json_response(await _view(bulks, record, counters, offset, limit))


@routes.delete("/v1/bulk/{bulk_id}")
async def cancel_bulk(request: web.Request) -> web.Response:
    """Cancel what has not started: listing stops, and each child not started yet ends ``CANCELLED`` when
    a worker comes to it (without reading or writing anything); children already started finish."""
    key = await authenticate(request)
    settings = request.config_dict[SETTINGS]
    pool = request.config_dict[REDIS]
    bulks = BulkStore(pool, settings.redis.prefix)
    with redis_errors("cancel the bulk job"):
        record = await owned_bulk(bulks, request.match_info["bulk_id"], key.id)
        counters = await reconcile(bulks, pool, settings.redis.queue_name, record.id)
        if is_done(record, counters):
            status = view_status(record, counters).value
            raise ConflictError(f"the bulk job is {status}: nothing is left to cancel", code="BULK_FINISHED")
        await bulks.progress.cancel(record.id)
        counters = await bulks.progress.counters(record.id)
    body = await _view(bulks, record, counters, 0, 100)
    return json_response(body, status=202)
