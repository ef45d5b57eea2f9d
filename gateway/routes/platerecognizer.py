"""Plate Recognizer Blur-compatible API: ``POST /v1/blur`` (cloud style, ``Authorization: Token <key>``)
and ``GET /info/``; with ``settings.gateway.platerecognizer_port`` set, also the on-premise style
``POST /`` and ``GET /info/`` on that port (a second listener of the same process).

Parameters map onto :class:`BlurOptions`: ``faces`` / ``plates`` intensities (0 = detect, don't blur;
1..10), ``logo`` (a file), exclusion margins ``et/el/eb/er`` and box ``xmin/ymin/xmax/ymax``, ``split`` +
``overlap``, ``copy_metadata``, ``face_max_resolution``. ``camera_id``, ``snapshot_filename``,
``regions`` and ``config`` are accepted (``snapshot_filename`` names the returned file). ``skip_regexp``
(repeatable): plates whose read text fully matches one are left unblurred (``BlurOptions.skip_regexp``);
``plates[].result`` carries Snapshot's ``plate`` / ``score`` / ``candidates`` where the plate was read.
Errors are ``{"error": "..."}``: 400, 403 for a missing or wrong token, 413; 503 (with ``job_id``) when the
job did not finish in time.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator
from importlib import metadata as importlib_metadata
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.backends import redis_errors
from gateway.errors import (
    ERROR_RENDERERS,
    ErrorInfo,
    ErrorRenderers,
    error_middleware,
    register_error_renderer,
)
from gateway.facade import (
    JOB_ID,
    Form,
    FormFile,
    JobTimeoutError,
    delete_upload,
    fetch_url,
    max_upload_bytes,
    parse_bool,
    parse_int,
    parse_number,
    put_upload,
    read_form,
    result_bytes,
    run_job,
    verify_key,
)
from gateway.inputs import body_limit
from gateway.requestid import request_id_middleware
from gateway.responses import json_response
from gateway.state import API_KEYS, REDIS, SETTINGS, STORE, SUBMITTER, URL_FETCHER
from shared.errors import PermanentError, UnauthorizedError, ValidationError
from shared.jobs import (
    MAX_SKIP_PATTERN_LENGTH,
    MAX_SKIP_PATTERNS,
    MAX_SPLIT_CHUNKS,
    BlurOptions,
    Detection,
    Exclusion,
    JobRecord,
    check_skip_patterns,
    plate_key,
)

log = logging.getLogger(__name__)

# Jobs sent to the on-premise listener without a token belong to this owner (as the vendor's SDK, that
# listener has no authentication of its own; it is off unless the operator sets a port).
ONPREM_OWNER = "platerecognizer-onprem"
ANONYMOUS_OWNER = web.AppKey("platerecognizer_anonymous_owner", str)

INTENSITY_FIELDS = ("faces", "plates")
MARGIN_FIELDS = {"et": "top", "el": "left", "eb": "bottom", "er": "right"}
BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
FILE_FIELDS = ("upload", "logo")
INTENSITY = (0, 10)
MARGIN = (0.0, 100.0)
BOX_LIMIT = 1_000_000
MAX_OVERLAP = 90.0
FACE_RESOLUTION = (64, 16384)
DEFAULT_OVERLAP = 20.0
MAX_BOXES = 21  # Exclusion's box and its 20 more_boxes

routes = web.RouteTableDef()


# -- the vendor's shapes (the OpenAPI document is generated from these) --------------------------------------


class PlateRecognizerError(BaseModel):
    """Plate Recognizer's error body."""

    error: str
    job_id: str | None = Field(default=None, description="Only on 503: the job that did not finish in time.")


class PlateRecognizerBox(BaseModel):
    xmin: int
    ymin: int
    xmax: int
    ymax: int


class PlateRecognizerFace(BaseModel):
    box: PlateRecognizerBox
    score: float


class PlateRecognizerCandidate(BaseModel):
    plate: str
    score: float


class PlateRecognizerResult(BaseModel):
    """Snapshot's result for a plate; ``plate``, ``score`` and ``candidates`` only where it was read."""

    box: PlateRecognizerBox
    dscore: float
    plate: str | None = None
    score: float | None = None
    candidates: list[PlateRecognizerCandidate] | None = None


class PlateRecognizerPlate(BaseModel):
    polygon: list[Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        min_length=4, max_length=4, description="4 corners [x, y], clockwise from the top-left."
    )
    result: PlateRecognizerResult


class PlateRecognizerImage(BaseModel):
    content_type: str | None
    filename: str
    base64: str


class PlateRecognizerBlur(BaseModel):
    """``POST /v1/blur``'s answer; ``blur`` is null when neither ``faces`` nor ``plates`` is above 0."""

    faces: list[PlateRecognizerFace]
    plates: list[PlateRecognizerPlate]
    blur: PlateRecognizerImage | None


class PlateRecognizerUsage(BaseModel):
    calls: int = Field(description="Submissions this UTC month.")


class PlateRecognizerSnapshot(BaseModel):
    """The calling key's figures, in the place Snapshot's ``/info/`` has them."""

    version: str = Field(description="Veil's version.")
    total_calls: int | None = Field(
        description="The key's monthly limit, else its credits left plus this month's calls; null: no limit."
    )
    usage: PlateRecognizerUsage
    webhooks: list[str] = Field(default_factory=list, description="Always empty.")


class PlateRecognizerInfo(BaseModel):
    version: str = Field(description="Veil's version.")
    snapshot: PlateRecognizerSnapshot | None = Field(
        description="With a token: its key's calls and limit; without one: null (no Snapshot behind Veil)."
    )


# What the vendor's clients send: every field may come empty (unset), repeatable ones as several fields.
Empty = Literal[""]
Intensity = Annotated[int, Field(ge=INTENSITY[0], le=INTENSITY[1])] | Empty
Margin = Annotated[float, Field(ge=MARGIN[0], le=MARGIN[1])] | Empty
Coordinate = Annotated[int, Field(ge=0, le=BOX_LIMIT)] | Empty
Flag = bool | Empty


def _field(description: str, **constraints: Any) -> Any:
    """Optional, and no default to show: a form leaves it out."""
    return Field(default=None, description=description, json_schema_extra=_no_default, **constraints)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class PlateRecognizerForm(BaseModel):
    """``POST /v1/blur``'s form: ``upload`` or ``upload_url``, and parameters. An empty field is unset; a
    field given twice counts once (the last), but for the repeatable ``skip_regexp``, ``regions`` and the
    box coordinates (one of each per excluded box, paired in order)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [{"required": ["upload"]}, {"required": ["upload_url"]}]}
    )

    upload: bytes = _field("The image file (JPEG, PNG or WebP).")
    upload_url: str = _field("The image's URL (SSRF-guarded); has priority over `upload`.")
    logo: bytes | Empty = _field("A logo file warped onto each plate; empty: none.")
    faces: Intensity = _field("Face blur intensity: 0 detects without blurring, 1-10 weak to strong.")
    plates: Intensity = _field("Plate blur intensity: 0 detects without blurring, 1-10 weak to strong.")
    et: Margin = _field("Excluded margin at the top, percent of the height.")
    el: Margin = _field("Excluded margin at the left, percent of the width.")
    eb: Margin = _field("Excluded margin at the bottom, percent of the height.")
    er: Margin = _field("Excluded margin at the right, percent of the width.")
    xmin: list[Coordinate] = _field("Excluded box: left, pixels (repeat for more boxes).")
    ymin: list[Coordinate] = _field("Excluded box: top, pixels (repeat for more boxes).")
    xmax: list[Coordinate] = _field("Excluded box: right, pixels (repeat for more boxes).")
    ymax: list[Coordinate] = _field("Excluded box: bottom, pixels (repeat for more boxes).")
    split: Flag | Annotated[int, Field(ge=0, le=MAX_SPLIT_CHUNKS)] = _field(
        "Split into horizontal chunks (panoramas): true (Veil picks the chunks), false, or the number of"
        " chunks (0 and 1: none), as the vendor's folder client sends `--split N`."
    )
    overlap: Annotated[float, Field(ge=0, le=MAX_OVERLAP)] | Empty = _field(
        "Chunk overlap in percent (default 20)."
    )
    copy_metadata: Flag = _field("Keep allowlisted EXIF tags.")
    face_max_resolution: Annotated[int, Field(ge=FACE_RESOLUTION[0], le=FACE_RESOLUTION[1])] | Empty = _field(
        "Longest side faces are detected at."
    )
    skip_regexp: list[Annotated[str, Field(max_length=MAX_SKIP_PATTERN_LENGTH)]] = _field(
        "Plates whose read text fully matches one are left unblurred (repeatable).",
        max_length=MAX_SKIP_PATTERNS,
    )
    regions: list[str] = _field("Accepted (Snapshot's regions) and ignored; repeatable.")
    config: str = _field("A JSON object (accepted and ignored).")
    camera_id: str = _field("Accepted and ignored.")
    snapshot_filename: str = _field("Names the returned file.")


ACCEPTED_FIELDS = frozenset(PlateRecognizerForm.model_fields)


def render_error(request: web.Request, error: ErrorInfo) -> web.StreamResponse:
    """``{"error": "..."}``; a missing or wrong token is 403, as are no credits left; an unsupported image
    400; a quota reached 429 (with ``Retry-After``)."""
    status = {401: 403, 402: 403, 415: 400}.get(error.status, error.status)  # out of credits: 403
    body = PlateRecognizerError(error=error.message)
    if JOB_ID in request and status == 503:
        body.job_id = request[JOB_ID]
    return json_response(body.model_dump(exclude_none=True), status=status, headers=error.headers)


def version() -> str:
    try:
        return importlib_metadata.version("veil")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


# -- request → options --------------------------------------------------------------------------------------


def _value(form: Form, name: str) -> str | None:
    value = form.get(name)
    return None if value is None or value == "" else value


def parse_split(raw: str | None) -> tuple[bool, int | None]:
    """``split`` as the vendor's clients send it: ``true`` / ``false`` (the vendor's own chunking, or none),
    or a number of horizontal chunks (its folder client's ``--split N``): 0 and 1 mean none, 2 to
    :data:`MAX_SPLIT_CHUNKS` that many. Unset or empty: none."""
    if raw is None:
        return False, None
    try:
        number: float | None = float(raw)
    except ValueError:
        number = None
    if number is None:
        with contextlib.suppress(ValidationError):
            return parse_bool("split", raw), None
    elif number.is_integer() and 0 <= number <= MAX_SPLIT_CHUNKS:
        count = int(number)
        return (True, count) if count >= 2 else (False, None)
    raise ValidationError(
        f"split must be true, false or a whole number of chunks from 0 to {MAX_SPLIT_CHUNKS}, not {raw!r}"
    )


def exclusion_boxes(form: Form) -> list[tuple[int, int, int, int]]:
    """The excluded boxes: ``xmin``, ``ymin``, ``xmax``, ``ymax`` once per box (its folder client repeats
    them for several boxes, paired in order); empty values are no values."""
    values = {name: [value for value in form.values.get(name, []) if value != ""] for name in BOX_FIELDS}
    count = max(len(given) for given in values.values())
    missing = [name for name in BOX_FIELDS if len(values[name]) < count]
    if missing:
        raise ValidationError(
            f"each exclusion box needs xmin, ymin, xmax and ymax; missing {', '.join(missing)}"
        )
    if count > MAX_BOXES:
        raise ValidationError(f"at most {MAX_BOXES} exclusion boxes")
    boxes = []
    for index in range(count):
        a, b, c, d = (parse_int(name, values[name][index], 0, BOX_LIMIT) for name in BOX_FIELDS)
        if a >= c or b >= d:
            raise ValidationError("the exclusion box needs xmin < xmax and ymin < ymax")
        boxes.append((a, b, c, d))
    return boxes


def parse_options(form: Form, logo_key: str | None = None) -> tuple[BlurOptions, bool]:
    """The job's options from the form, and whether the image is returned (an intensity above 0)."""
    unknown = sorted((set(form.values) | set(form.files)) - ACCEPTED_FIELDS)
    if unknown:
        raise ValidationError(f"unknown parameter {', '.join(unknown)}")
    try:
        skip = check_skip_patterns([value for value in form.values.get("skip_regexp", []) if value])
    except ValueError as exc:
        raise ValidationError(f"skip_regexp: {exc}") from exc
    strengths = {
        name: parse_int(name, raw, *INTENSITY)
        for name in INTENSITY_FIELDS
        if (raw := _value(form, name)) is not None
    }
    margins = {
        side: parse_number(name, raw, *MARGIN)
        for name, side in MARGIN_FIELDS.items()
        if (raw := _value(form, name)) is not None
    }
    boxes = exclusion_boxes(form)
    exclusion = (
        Exclusion(**margins, box=boxes[0] if boxes else None, more_boxes=tuple(boxes[1:]))
        if margins or boxes
        else None
    )
    overlap_raw = _value(form, "overlap")
    overlap = (
        parse_number("overlap", overlap_raw, 0, MAX_OVERLAP) if overlap_raw is not None else DEFAULT_OVERLAP
    )
    split, chunks = parse_split(_value(form, "split"))
    keep_metadata = parse_bool("copy_metadata", form.get("copy_metadata") or "false")
    max_res_raw = _value(form, "face_max_resolution")
    face_max_side = parse_int("face_max_resolution", max_res_raw, *FACE_RESOLUTION) if max_res_raw else None
    config = _value(form, "config")
    if config is not None:
        try:
            parsed = orjson.loads(config)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"config must be a JSON object: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ValidationError("config must be a JSON object")
    options = BlurOptions(
        face_strength=strengths.get("faces", 0),
        plate_strength=strengths.get("plates", 0),
        logo_key=logo_key,
        exclusion=exclusion,
        split=split,
        split_chunks=chunks,
        split_overlap=overlap,
        keep_metadata=keep_metadata,
        face_max_side=face_max_side,
        skip_regexp=skip,
    )
    return options, any(value > 0 for value in strengths.values())


# -- record → response --------------------------------------------------------------------------------------


def _box(box: list[int]) -> PlateRecognizerBox:
    return PlateRecognizerBox(xmin=box[0], ymin=box[1], xmax=box[2], ymax=box[3])


def plate_polygon(det: Detection) -> list[list[float]]:
    """4 corners, clockwise from the top-left, as floats (the box's corners when there is no mask)."""
    if det.polygon and len(det.polygon) == 4:
        points = [(float(x), float(y)) for x, y in det.polygon]
    else:
        x1, y1, x2, y2 = det.box
        points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    cx = sum(p[0] for p in points) / 4
    cy = sum(p[1] for p in points) / 4
    clockwise = sorted(points, key=lambda p: math.atan2(p[1] - cy, p[0] - cx))
    start = min(range(4), key=lambda i: clockwise[i][0] + clockwise[i][1])
    ordered = clockwise[start:] + clockwise[:start]
    return [[float(x), float(y)] for x, y in ordered]


def plate_result(det: Detection) -> PlateRecognizerResult:
    """Snapshot's result for a plate: ``box`` and ``dscore`` (the detection's), and where its text was read
    ``plate`` (lower case, letters and digits, as Snapshot writes it), ``score`` (the reading's) and
    ``candidates`` (that one reading). Unread plates have no ``plate``: the vendor documents ``{}`` too."""
    result = PlateRecognizerResult(box=_box(det.box), dscore=det.score)
    plate = plate_key(det.text) if det.text else ""
    if plate:
        score = det.text_score if det.text_score is not None else 0.0
        result.plate, result.score = plate, score
        result.candidates = [PlateRecognizerCandidate(plate=plate, score=score)]
    return result


def blur_response(
    record: JobRecord, image: bytes | None, filename: str, exclusion: Exclusion | None
) -> dict[str, object]:
    """The documented response; detections inside an exclusion zone are left out."""
    info = record.known_input()
    width, height = info.width, info.height
    kept = [
        det for det in record.detections if exclusion is None or not exclusion.covers(det.box, width, height)
    ]
    faces = [PlateRecognizerFace(box=_box(det.box), score=det.score) for det in kept if det.class_ == "face"]
    plates = [
        PlateRecognizerPlate(polygon=plate_polygon(det), result=plate_result(det))
        for det in kept
        if det.class_ == "plate"
    ]
    blur: PlateRecognizerImage | None = None
    if image is not None:
        content_type = record.result.content_type if record.result else None
        blur = PlateRecognizerImage(
            content_type=content_type, filename=filename, base64=base64.b64encode(image).decode("ascii")
        )
    # Unset optional fields (an unread plate's text) are left out, as the vendor does; null blur stays.
    return PlateRecognizerBlur(faces=faces, plates=plates, blur=blur).model_dump(exclude_unset=True)


def result_filename(form: Form, upload: FormFile | None, url: str | None, extension: str) -> str:
    """``snapshot_filename``, else the uploaded file's or the URL's name, else ``image.<ext>``."""
    for candidate in (
        _value(form, "snapshot_filename"),
        upload.filename if upload is not None and url is None else None,
        PurePosixPath(urlsplit(url).path).name if url else None,
    ):
        if candidate:
            return PurePosixPath(candidate.replace("\\", "/")).name or f"image.{extension}"
    return f"image.{extension}"


# -- handlers -----------------------------------------------------------------------------------------------


async def _owner(request: web.Request) -> str:
    header = request.headers.get("Authorization", "").strip()
    if not header:
        anonymous = request.app.get(ANONYMOUS_OWNER)
        if anonymous is not None:
            return anonymous
        raise UnauthorizedError("Authentication credentials were not provided.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "token" or not token.strip():
        raise UnauthorizedError("Invalid token header: use 'Authorization: Token <key>'.")
    key = await verify_key(request, token.strip())
    if key is None:
        raise UnauthorizedError("Invalid token.")
    return key.id


async def _store_logo(request: web.Request, logo: FormFile) -> str:
    try:
        info = await request.config_dict[SUBMITTER].inspect(logo.data)
    except PermanentError as exc:  # 400/413/415 alike: the logo is a parameter
        raise ValidationError(f"logo: {exc.message}") from exc
    return await put_upload(request, f"logo-{uuid.uuid4().hex}", logo.data, info.format.content_type)


@routes.post("/v1/blur")
async def blur(request: web.Request) -> web.Response:
    owner = await _owner(request)
    form = await read_form(request, max_upload_bytes(request), file_fields=FILE_FIELDS)
    parse_options(form)  # refuse bad parameters before fetching or storing anything
    url = _value(form, "upload_url")  # "given priority over upload"
    upload = form.files.get("upload")
    if url is not None:
        image = (await fetch_url(request, owner, url)).data
    elif upload is not None and upload.data:
        image = upload.data
    else:
        raise ValidationError("upload or upload_url is required")
    logo_text = form.get("logo")
    if logo_text:
        raise ValidationError("logo must be an uploaded file; paths in a /logos directory are not supported")
    logo = form.files.get("logo")
    logo_key = await _store_logo(request, logo) if logo is not None and logo.data else None
    options, return_image = parse_options(form, logo_key)
    try:
        record = await run_job(request, owner, image, options)
    except JobTimeoutError:
        raise  # the worker still needs the logo; the uploads lifecycle rule removes it later
    except BaseException:
        if logo_key is not None:
            await delete_upload(request, logo_key)
        raise
    if logo_key is not None:
        await delete_upload(request, logo_key)
    assert record.result is not None
    blurred = await result_bytes(request, record) if return_image else None
    filename = result_filename(form, upload, url, record.known_input().format.extension)
    return json_response(blur_response(record, blurred, filename, options.exclusion))


@routes.get("/info/")
async def info(request: web.Request) -> web.Response:
    """Veil's version; with a token also its key's calls this month and its limit (Snapshot's fields)."""
    snapshot = None
    if request.headers.get("Authorization", "").strip():
        owner = await _owner(request)
        with redis_errors("reading the key's usage"):
            state = await request.config_dict[SUBMITTER].quotas.state(owner)
        total = state.limits.monthly_limit
        if total is None and state.credits_left is not None:
            total = max(state.credits_left, 0) + state.used_month
        snapshot = PlateRecognizerSnapshot(
            version=version(), total_calls=total, usage=PlateRecognizerUsage(calls=state.used_month)
        )
    return json_response(PlateRecognizerInfo(version=version(), snapshot=snapshot).model_dump())


# -- the on-premise listener --------------------------------------------------------------------------------


def onprem_app(main: web.Application) -> web.Application:
    """``POST /`` and ``GET /info/`` sharing the main app's state (keys, store, queue, fetcher)."""
    settings = main[SETTINGS]
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=body_limit(settings.limits.max_upload_bytes),
    )
    app[ERROR_RENDERERS] = ErrorRenderers(default=render_error)
    app[SETTINGS] = settings
    app[REDIS] = main[REDIS]
    app[API_KEYS] = main[API_KEYS]
    app[STORE] = main[STORE]
    app[URL_FETCHER] = main[URL_FETCHER]
    app[SUBMITTER] = main[SUBMITTER]
    app[ANONYMOUS_OWNER] = ONPREM_OWNER
    app.router.add_post("/", blur)
    app.router.add_get("/info/", info)
    app.router.add_get("/info", info)
    return app


async def onprem_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    port = settings.gateway.platerecognizer_port
    if port is None:
        yield
        return
    runner = web.AppRunner(
        onprem_app(app),
        access_log_format='%a "%r" %s %b %Tfs',
        shutdown_timeout=settings.gateway.drain_seconds,  # open requests finish, as on the main port
    )
    await runner.setup()
    await web.TCPSite(runner, settings.gateway.host, port).start()
    log.info("Plate Recognizer on-premise API on http://%s:%d/", settings.gateway.host, port)
    yield
    await runner.cleanup()


def setup(app: web.Application) -> None:
    """Register the routes and error shape; call after the state clean-up contexts are added."""
    app.add_routes(routes)
    register_error_renderer(app, "/v1/blur", render_error)
    register_error_renderer(app, "/info/", render_error)
    app.cleanup_ctx.append(onprem_ctx)
