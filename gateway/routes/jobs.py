"""The native jobs API: ``POST /v1/jobs``, ``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/result``,
``POST /v1/jobs/{id}/cancel``, ``DELETE /v1/jobs/{id}`` (its result). Photos and videos alike (the vendor
facades take photos only).

api4ai's inputs and outputs are options here (``objects_to_hide``, ``output``, ``wait``, JSON Buffer or
byte-array images; ``objects``/``format``/``width``/``height`` on succeeded jobs): see :mod:`gateway.api4ai`.
"""

from __future__ import annotations

import base64
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import api4ai
from gateway.auth import authenticate
from gateway.backends import redis_errors
from gateway.callbacks import parse_callback_url
from gateway.inputs import StoredImage, UploadedImage, UrlImage, read_submission
from gateway.options import parse_blur_options
from gateway.responses import json_response
from gateway.state import REDIS, SETTINGS, SUBMITTER, URL_FETCHER
from shared.errors import ConflictError, GoneError
from shared.jobcancel import CancelFlags
from shared.jobs import JobRecord, JobStatus, ObjectRef, utcnow

routes = web.RouteTableDef()


class SelfLink(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    self_: str = Field(alias="self", examples=["/v1/jobs/3f2a…"])


class JobAccepted(BaseModel):
    """``POST /v1/jobs``'s 202: the job is queued; poll ``links.self``."""

    id: str
    status: JobStatus
    created_at: datetime
    links: SelfLink


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    key = await authenticate(request)
    settings = request.config_dict[SETTINGS]
    limits = settings.limits
    submission = await read_submission(request, max(limits.max_upload_bytes, limits.max_video_bytes))
    raw_options, answer = api4ai.split_options(submission.options, settings.gateway.facade_timeout_seconds)
    callback_url = parse_callback_url(raw_options.pop("callback_url", None), settings)
    options = parse_blur_options(raw_options)
    image: bytes | ObjectRef
    match submission.image:
        case UploadedImage(data=data):
            image = data
        case UrlImage(url=url):
            await request.config_dict[SUBMITTER].admit(key.id, count=False)  # refused: don't fetch
            image = (await request.config_dict[URL_FETCHER].fetch(url)).data
        case StoredImage(ref=ref):
            image = ref
    submitter = request.config_dict[SUBMITTER]
    record = await submitter.submit(key.id, image, options, callback_url=callback_url, videos=True)
    location = job_path(record.id)
    if answer.wait > 0:  # api4ai style: answer with the finished job when it finishes in time
        record = await submitter.wait(record.id, key.id, answer.wait)
        if record.status.finished:
            body = await job_view(request, record, answer.output)
            return json_response(body, status=200, headers={"Location": location})
    accepted = JobAccepted(
        id=record.id, status=record.status, created_at=record.created_at, links=SelfLink(self_=location)
    )
    return json_response(accepted.model_dump(by_alias=True), status=202, headers={"Location": location})


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    output = api4ai.parse_output(request.query.get("output"))
    return json_response(await job_view(request, record, output))


async def job_view(request: web.Request, record: JobRecord, output: str) -> dict[str, object]:
    """The job JSON, with the api4ai fields once a photo's job succeeded (and the result inline for
    base64)."""
    data = record.public()
    if record.input is None or not record.input.is_video:  # api4ai's clients know photos only
        data.update(api4ai.view(record))
    result = data.get("result")
    # Past expires_at the object may linger in the store until the sweep: never hand it out then.
    live = record.result is not None and record.result.expires_at > utcnow()
    if output == "base64" and live and record.result is not None and isinstance(result, dict):
        stored = await request.config_dict[SUBMITTER].transfer.get(record.result.key)
        result["base64"] = base64.b64encode(stored.body).decode("ascii")
    return data


@routes.get("/v1/jobs/{job_id}/result")
async def get_result(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    if record.result_deleted_at is not None:
        raise GoneError("the result was deleted by its owner", code="RESULT_DELETED")
    if record.status is JobStatus.SUCCEEDED and record.result is not None:
        if record.result.expires_at <= utcnow():
            raise GoneError("the result has expired (results are kept for 24 h)", code="RESULT_EXPIRED")
        return web.Response(status=302, headers={"Location": record.result.url})
    if record.status is JobStatus.FAILED:
        message = record.error.message if record.error else "the job failed"
        raise ConflictError(message, code="JOB_FAILED")
    raise ConflictError(f"the job is {record.status.value}; poll {job_path(record.id)} until it has finished")


@routes.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job: it ends failed ``CANCELLED`` with no result (a queued one when a
    worker comes to it, unread; a running video at its next batch; a photo already running finishes)."""
    key = await authenticate(request)
    submitter = request.config_dict[SUBMITTER]
    record = await submitter.get(request.match_info["job_id"], key.id)
    if record.status.finished:
        raise ConflictError(f"the job is {record.status.value}: nothing to cancel", code="JOB_FINISHED")
    settings = request.config_dict[SETTINGS]
    with redis_errors("cancelling the job"):
        await CancelFlags(request.config_dict[REDIS], settings.redis.prefix).cancel(record.id)
    return json_response(await job_view(request, record, "url"), status=202)


@routes.delete("/v1/jobs/{job_id}")
async def delete_result(request: web.Request) -> web.Response:
    """Delete a finished job's result now rather than at its 24 h expiry (the job record stays)."""
    key = await authenticate(request)
    submitter = request.config_dict[SUBMITTER]
    record = await submitter.get(request.match_info["job_id"], key.id)
    if not record.status.finished:
        raise ConflictError(f"the job is {record.status.value}; delete it once it has finished")
    if record.result is not None:
        await submitter.transfer.delete(record.result.key)
        record.result = None
        record.result_deleted_at = utcnow()
        with redis_errors("updating the job"):
            await submitter.jobs.put(record)
    return web.Response(status=204)
