"""The native jobs API: ``POST /v1/jobs``, ``GET /v1/jobs/{id}``, ``GET /v1/jobs/{id}/result``."""

from __future__ import annotations

from aiohttp import web

from gateway.auth import authenticate
from gateway.inputs import StoredImage, UploadedImage, UrlImage, read_submission
from gateway.options import parse_blur_options
from gateway.responses import json_response
from gateway.state import SETTINGS, SUBMITTER, URL_FETCHER
from shared.errors import ConflictError
from shared.jobs import JobStatus, ObjectRef

routes = web.RouteTableDef()


def job_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    key = await authenticate(request)
    settings = request.config_dict[SETTINGS]
    submission = await read_submission(request, settings.limits.max_upload_bytes)
    options = parse_blur_options(submission.options)
    image: bytes | ObjectRef
    match submission.image:
        case UploadedImage(data=data):
            image = data
        case UrlImage(url=url):
            image = (await request.config_dict[URL_FETCHER].fetch(url)).data
        case StoredImage(ref=ref):
            image = ref
    record = await request.config_dict[SUBMITTER].submit(key.id, image, options)
    location = job_path(record.id)
    body = {
        "id": record.id,
        "status": record.status.value,
        "created_at": record.created_at,
        "links": {"self": location},
    }
    return json_response(body, status=202, headers={"Location": location})


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    return json_response(record.public())


@routes.get("/v1/jobs/{job_id}/result")
async def get_result(request: web.Request) -> web.Response:
    key = await authenticate(request)
    record = await request.config_dict[SUBMITTER].get(request.match_info["job_id"], key.id)
    if record.status is JobStatus.SUCCEEDED and record.result is not None:
        return web.Response(status=302, headers={"Location": record.result.url})
    if record.status is JobStatus.FAILED:
        message = record.error.message if record.error else "the job failed"
        raise ConflictError(message, code="JOB_FAILED")
    raise ConflictError(f"the job is {record.status.value}; poll {job_path(record.id)} until it has finished")
