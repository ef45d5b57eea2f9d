"""VehiCore-compatible anonymization: ``POST /api/anonymize`` (plates), ``/api/anonymize/face`` and
``/api/anonymize/all`` with ``X-API-Key``, a multipart ``image``, ``?response=json|image|mixed`` and the
``padding`` / ``shrink`` / ``blur`` tuning parameters (query string or form fields).

Errors are ``{"message", "code"}``: 400 ``VALIDATION_ERROR`` (also for oversized images, which VehiCore
does not list as 413), 401 ``UNAUTHORIZED``, 415 and 503 without a code (503 for a job that did not
finish in time carries its ``job_id``), 402 ``INSUFFICIENT_CREDITS`` when the key's credits are used up and
429 ``QUOTA_EXCEEDED`` (with ``Retry-After``) at one of its caps (``shared/quotas.py``).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import MultipartWriter, web
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import ErrorInfo, register_error_renderer
from gateway.facade import (
    JOB_ID,
    max_upload_bytes,
    parse_number,
    read_form,
    result_bytes,
    run_job,
    verify_key,
)
from gateway.responses import json_response
from shared.errors import UnauthorizedError, ValidationError
from shared.jobs import BlurOptions, JobRecord, Target

PREFIX = "/api/"
Mode = Literal["plates", "faces", "all"]
TARGETS: dict[Mode, tuple[Target, ...]] = {
    "plates": (Target.PLATES,),
    "faces": (Target.FACES,),
    "all": (Target.FACES, Target.PLATES),
}
RESPONSE_MODES = ("json", "image", "mixed")
# The documented ranges of the tuning parameters.
RANGES = {"padding": (0.10, 0.30), "shrink": (0.0, 0.40), "blur": (1.0, 80.0)}
_FORM_FIELDS = {"image", "response", *RANGES}
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}

routes = web.RouteTableDef()


# -- the vendor's shapes (the OpenAPI document is generated from these) --------------------------------------


class VehiCoreError(BaseModel):
    """VehiCore's error body; 415 and 503 come without a ``code``, as documented."""

    message: str
    code: str | None = Field(default=None, examples=["VALIDATION_ERROR"])
    job_id: str | None = Field(default=None, description="Only on 503: the job that did not finish in time.")


class VehiCoreDetection(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: Literal["face", "plate"] = Field(alias="class")
    score: float
    box: list[int] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels.")
    polygon: list[list[int]] | None = Field(default=None, description="Plates with a mask: their outline.")


class VehiCoreParams(BaseModel):
    padding: float
    shrink: float
    blur: float | None


class VehiCoreMetadata(BaseModel):
    """The JSON metadata of a finished job (``response=json``, and the first part of ``mixed``)."""

    job_id: str
    mode: Mode
    width: int
    height: int
    content_type: str
    faces: int
    plates: int
    detections: list[VehiCoreDetection]
    regions: list[list[int]] = Field(description="The rectangles whose pixels were changed.")
    params: VehiCoreParams


def render_error(request: web.Request, error: ErrorInfo) -> web.StreamResponse:
    """VehiCore's ``{"message", "code"}`` with its documented statuses."""
    status, code = error.status, error.code
    if status in (400, 413):
        status, code = 400, "VALIDATION_ERROR"
    body = VehiCoreError(message=error.message)
    if status == 401:
        body.code = "UNAUTHORIZED"
    elif status not in (415, 503):  # documented without a code
        body.code = code
    if JOB_ID in request and status == 503:
        body.job_id = request[JOB_ID]
    return json_response(body.model_dump(exclude_none=True), status=status, headers=error.headers)


def tuning(values: dict[str, str]) -> dict[str, float]:
    """``padding`` / ``shrink`` / ``blur`` as given, checked against the documented ranges."""
    parsed: dict[str, float] = {}
    for name, (low, high) in RANGES.items():
        raw = values.get(name)
        if raw is not None and raw.strip() != "":
            parsed[name] = parse_number(name, raw.strip(), low, high)
    return parsed


def metadata(record: JobRecord, mode: Mode) -> dict[str, object]:
    """The JSON metadata of a finished job (the ``json`` response and the first part of ``mixed``)."""
    detections = [
        VehiCoreDetection(class_=det.class_, score=det.score, box=det.box)
        if not det.polygon
        else VehiCoreDetection(class_=det.class_, score=det.score, box=det.box, polygon=det.polygon)
        for det in record.detections
    ]
    info = record.known_input()
    content_type = record.result.content_type if record.result else info.format.content_type
    options = record.options
    meta = VehiCoreMetadata(
        job_id=record.id,
        mode=mode,
        width=info.width,
        height=info.height,
        content_type=content_type,
        faces=sum(1 for det in record.detections if det.class_ == "face"),
        plates=sum(1 for det in record.detections if det.class_ == "plate"),
        detections=detections,
        regions=record.blurred_regions,
        params=VehiCoreParams(padding=options.padding, shrink=options.shrink, blur=options.blur),
    )
    return meta.model_dump(by_alias=True, exclude_unset=True)  # no polygon where there is none


def _response_mode(value: str) -> str:
    """``json``, ``image`` or ``mixed`` (any case); "" when not given."""
    mode = value.strip().lower()
    if mode and mode not in RESPONSE_MODES:
        raise ValidationError(f"response must be json, image or mixed, not {mode!r}")
    return mode


def _filename(content_type: str) -> str:
    return f"anonymized.{_EXTENSIONS.get(content_type, 'bin')}"


async def _anonymize(request: web.Request, mode: Mode) -> web.StreamResponse:
    token = request.headers.get("X-API-Key", "").strip()
    if not token:
        raise UnauthorizedError("missing X-API-Key")
    key = await verify_key(request, token)
    if key is None:
        raise UnauthorizedError("invalid X-API-Key")
    query = {name: request.query.getone(name) for name in request.query}
    unknown = sorted(set(query) - (_FORM_FIELDS - {"image"}))
    if unknown:
        raise ValidationError(f"unknown parameter: {', '.join(unknown)}")
    response_mode = _response_mode(query.get("response", ""))
    params = tuning(query)

    form = await read_form(request, max_upload_bytes(request), file_fields={"image"})
    unknown = sorted(set(form.values) - _FORM_FIELDS)
    if unknown:
        raise ValidationError(f"unknown field: {', '.join(unknown)}")
    # Form fields may carry the tuning parameters and the response mode too; the query string wins.
    fields = {name: values[-1] for name, values in form.values.items()}
    response_mode = response_mode or _response_mode(fields.get("response", "")) or "mixed"
    params = {**tuning(fields), **params}
    upload = form.files.get("image")
    if upload is None:
        raise ValidationError("missing image: send the file in the multipart field 'image'")
    if not upload.data:
        raise ValidationError("the image is empty")

    options = BlurOptions(targets=TARGETS[mode], **params)
    record = await run_job(request, key.id, upload.data, options)
    assert record.result is not None
    meta = metadata(record, mode)
    if response_mode == "json":
        return json_response(meta)
    image = await result_bytes(request, record)
    content_type = record.result.content_type
    disposition = f'attachment; filename="{_filename(content_type)}"'
    if response_mode == "image":
        return web.Response(
            body=image,
            content_type=content_type,
            headers={"Content-Disposition": disposition, "X-Job-Id": record.id},
        )
    writer = MultipartWriter("mixed")
    json_part = writer.append_json(meta)
    json_part.set_content_disposition("inline", name="metadata")
    image_part = writer.append(image, {"Content-Type": content_type})
    image_part.set_content_disposition("attachment", name="image", filename=_filename(content_type))
    return web.Response(body=writer, headers={"X-Job-Id": record.id})


@routes.post("/api/anonymize")
async def anonymize_plates(request: web.Request) -> web.StreamResponse:
    return await _anonymize(request, "plates")


@routes.post("/api/anonymize/face")
async def anonymize_faces(request: web.Request) -> web.StreamResponse:
    return await _anonymize(request, "faces")


@routes.post("/api/anonymize/all")
async def anonymize_all(request: web.Request) -> web.StreamResponse:
    return await _anonymize(request, "all")


def setup(app: web.Application) -> None:
    app.add_routes(routes)
    register_error_renderer(app, PREFIX, render_error)
