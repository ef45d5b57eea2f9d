"""Gatiosoft PlateBlurer-compatible API: ``POST /plateblurer`` (and ``/plateblurer.aspx``, the vendor's
own path) with HTTP Basic auth (the API key is the password, any user name) and a JSON body
``{"base64_Photo_String", "photo_url", "boundingBoxCrop" | "plate_output"}``.

The answer is ``{"created", "predictions": [...], "final_photo"}``: plates only, predictions at or under
a probability of 0.20 dropped, boxes normalised to 0..1, ``final_photo`` the blurred photo with the
boxes drawn on it, ``boundingBoxPhoto`` a crop of the blurred plate when asked for ("" otherwise).
Errors are a list ``[{"cd", "description"}]``: 1001 (auth, 401), 1013 (over 5 MB: 413; nothing to
upload: 400), 1014 (invalid request data, 400) and 2001 (the data was accepted but could not be
processed: 400/415 → 400, or 5xx; a job that did not finish in time is 503 with its id).
A key's credits and quotas (``shared/quotas.py``) answer with the vendor's quota codes: 1002 (daily
limit), 1004 (monthly limit, or too many jobs at once), both 429 with ``Retry-After``, and 1005 (no
credits left, 402). The other billing codes (1003, 1006–1012) never occur: Veil has no trials or invoices.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import Annotated

import orjson
from aiohttp import web
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, RootModel

from gateway.errors import ErrorInfo, register_error_renderer
from gateway.facade import JOB_ID, fetch_url, result_bytes, run_job, timestamp_ms, verify_key
from gateway.inputs import decode_base64, read_body
from gateway.responses import json_response
from shared.errors import (
    InsufficientCreditsError,
    PayloadTooLargeError,
    QuotaExceededError,
    UnauthorizedError,
    ValidationError,
)
from shared.jobs import BlurOptions, Detection, JobRecord, Target

PREFIX = "/plateblurer"
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MIN_PROBABILITY = 0.20
TAG_ID = "6b333d95-e461-4155-890c-9921158f7d17"  # the vendor's tag id for "License Plate"
TAG_NAME = "License Plate"
FIELDS = frozenset({"base64_Photo_String", "photo_url", "boundingBoxCrop", "plate_output"})
DESCRIPTIONS = {
    "1001": "The authorization header is either empty or isn't Basic.",
    "1002": "Daily requests number exceeded in TRIAL mode!",
    "1004": "Requests number exceeded!",
    "1005": "Package expired!",
    "1013": "Input request too long! Maximum 5 MB per request are allowed / Nothing to upload",
    "1014": "Invalid request data!",
    "2001": "Invalid request data after passing to the API",
}
_PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}

routes = web.RouteTableDef()

# -- the vendor's shapes (the OpenAPI document is generated from these) --------------------------------------

Flag = Annotated[
    str | bool | None,
    Field(
        description="`YES` or `NO` (any case; empty or null: NO).",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": r"^\s*([Yy][Ee][Ss]|[Nn][Oo])?\s*$"},
                {"type": "boolean"},
                {"type": "null"},
            ]
        },
    ),
]


class PlateBlurerRequest(BaseModel):
    """The JSON body: one of ``base64_Photo_String`` or ``photo_url`` (the other one ``"NO"``, empty or
    left out)."""

    model_config = ConfigDict(extra="forbid")

    base64_Photo_String: str | None = Field(default=None, description="The photo in base64, or `NO`.")
    photo_url: str | None = Field(default=None, description="The photo's URL, or `NO`.")
    boundingBoxCrop: Flag = None
    plate_output: Flag = None


class PlateBlurerBox(BaseModel):
    left: float
    top: float
    width: float
    height: float


class PlateBlurerPrediction(BaseModel):
    probability: float
    tagId: str
    tagName: str
    boundingBox: PlateBlurerBox = Field(description="Normalised to 0..1.")
    boundingBoxPhoto: str = Field(
        description="The blurred plate's crop in base64 when asked for, else empty."
    )


class PlateBlurerAnswer(BaseModel):
    created: str = Field(examples=["2020-05-02T12:28:09.989Z"])
    predictions: list[PlateBlurerPrediction]
    final_photo: str = Field(description="The blurred photo with the plate boxes drawn, in base64.")


class PlateBlurerError(BaseModel):
    cd: str = Field(examples=["1014"])
    description: str
    job_id: str | None = Field(default=None, description="Only on 503: the job that did not finish in time.")


class PlateBlurerErrors(RootModel[list[PlateBlurerError]]):
    """The vendor's error body: a list of one error."""


# Which quota a QUOTA_EXCEEDED hit, as the vendor's code (shared/quotas.py names them).
QUOTA_CDS = {"daily": "1002", "monthly": "1004", "concurrent": "1004"}


def _cd(error: ErrorInfo) -> str:
    if error.code.isdigit():
        return error.code
    if isinstance(error.cause, InsufficientCreditsError):
        return "1005"
    if isinstance(error.cause, QuotaExceededError):
        return QUOTA_CDS.get(error.cause.limit, "1004")
    if error.status == 401:
        return "1001"
    if error.status == 413:
        return "1013"
    return "2001"


def render_error(request: web.Request, error: ErrorInfo) -> web.StreamResponse:
    """``[{"cd", "description"}]``; the description starts with the documented text, then the detail."""
    cd = _cd(error)
    status = 400 if error.status in (400, 415) or error.code.isdigit() else error.status
    if cd == "1013" and error.status == 413:
        status = 413
    if cd == "1001":
        status = 401
    documented = DESCRIPTIONS.get(cd, "")
    if cd == "1013":  # the documented text covers two cases; say which one this is
        documented = documented.split(" / ")[0 if status == 413 else 1]
    description = f"{documented} ({error.message})" if error.message else documented
    item = PlateBlurerError(cd=cd, description=description)
    if JOB_ID in request and status == 503:
        item.job_id = request[JOB_ID]
    headers = dict(error.headers)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="veil"'
    return json_response([item.model_dump(exclude_none=True)], status=status, headers=headers)


def invalid(message: str) -> ValidationError:
    return ValidationError(message, code="1014")


def basic_password(header: str) -> str | None:
    """The password of an ``Authorization: Basic`` header, or ``None`` when it is not one."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon and password else None


def _flag(document: dict[str, object], name: str) -> bool:
    value = document.get(name, "NO")
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.strip().upper() in {"YES", "NO", ""}:
        return value.strip().upper() == "YES"
    raise invalid(f"{name} must be YES or NO")


def _given(document: dict[str, object], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    text = value.strip()
    return None if not text or text.upper() == "NO" else text


def parse_request(body: bytes) -> tuple[str | None, str | None, bool]:
    """(base64 photo, photo URL, crop wanted) from the JSON body; 1013/1014 errors otherwise."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise ValidationError("the body is empty", code="1013") from exc
        raise invalid(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise invalid("the body must be a JSON object")
    unknown = sorted(set(document) - FIELDS)
    if unknown:
        raise invalid(f"unknown field {', '.join(unknown)}")
    photo, url = _given(document, "base64_Photo_String"), _given(document, "photo_url")
    crop = _flag(document, "boundingBoxCrop") or _flag(document, "plate_output")
    if photo is None and url is None:
        raise ValidationError("set base64_Photo_String or photo_url", code="1013")
    if photo is not None and url is not None:
        raise invalid("set either base64_Photo_String or photo_url (the other one to NO), not both")
    return photo, url, crop


def prediction(det: Detection, width: int, height: int, crop: str) -> dict[str, object]:
    x1, y1, x2, y2 = det.box
    box = PlateBlurerBox(left=x1 / width, top=y1 / height, width=(x2 - x1) / width, height=(y2 - y1) / height)
    return PlateBlurerPrediction(
        probability=det.score, tagId=TAG_ID, tagName=TAG_NAME, boundingBox=box, boundingBoxPhoto=crop
    ).model_dump()


def kept_plates(record: JobRecord) -> list[Detection]:
    return [det for det in record.detections if det.class_ == "plate" and det.score > MIN_PROBABILITY]


def draw_and_crop(
    blurred: bytes, content_type: str, boxes: list[list[int]], crops: bool
) -> tuple[str, list[str]]:
    """(the blurred photo with the boxes drawn, base64) and the base64 crops of each box (Pillow only)."""
    fmt = _PIL_FORMATS.get(content_type, "PNG")
    with Image.open(io.BytesIO(blurred)) as opened:
        image = opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB")
    crop_images = [image.crop((box[0], box[1], box[2], box[3])) for box in boxes] if crops else []
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 400))
    for x1, y1, x2, y2 in boxes:
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=(255, 0, 0), width=width)

    def encode(picture: Image.Image) -> str:
        buffer = io.BytesIO()
        if fmt == "JPEG" and picture.mode != "RGB":
            picture = picture.convert("RGB")
        picture.save(buffer, format=fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    return encode(image), [encode(crop) for crop in crop_images]


async def _owner(request: web.Request) -> str:
    password = basic_password(request.headers.get("Authorization", ""))
    if password is None:
        raise UnauthorizedError("")
    key = await verify_key(request, password)
    if key is None:
        raise UnauthorizedError("The API key (the Basic password) is not valid.", code="1001")
    return key.id


async def plateblurer(request: web.Request) -> web.Response:
    owner = await _owner(request)
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise PayloadTooLargeError(f"the request is {request.content_length} bytes")
    try:
        body = await read_body(request, MAX_REQUEST_BYTES)
    except PayloadTooLargeError as exc:
        raise PayloadTooLargeError("the request is over 5 MB") from exc
    photo, url, crop = parse_request(body)
    created = timestamp_ms()
    if photo is not None:
        try:
            image = decode_base64(photo, MAX_REQUEST_BYTES)
        except ValidationError as exc:
            raise invalid(f"base64_Photo_String: {exc.message.removeprefix('image_base64 ')}") from exc
    else:
        assert url is not None
        image = (await fetch_url(request, owner, url)).data
    record = await run_job(request, owner, image, BlurOptions(targets=(Target.PLATES,)))
    assert record.result is not None
    plates = kept_plates(record)
    blurred = await result_bytes(request, record)
    final_photo, crops = await asyncio.to_thread(
        draw_and_crop, blurred, record.result.content_type, [det.box for det in plates], crop
    )
    info = record.known_input()
    width, height = info.width, info.height
    predictions = [prediction(det, width, height, crops[i] if crop else "") for i, det in enumerate(plates)]
    answer = PlateBlurerAnswer.model_validate(
        {"created": created, "predictions": predictions, "final_photo": final_photo}
    )
    return json_response(answer.model_dump())


def setup(app: web.Application) -> None:
    app.router.add_post("/plateblurer", plateblurer)
    app.router.add_post("/plateblurer.aspx", plateblurer)
    register_error_renderer(app, PREFIX, render_error)
