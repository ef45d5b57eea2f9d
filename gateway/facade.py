"""What every vendor-compatible facade shares: reading vendor forms, fetching URL inputs through the
SSRF-guarded fetcher, submitting a normal Veil job, waiting for it and reading its result.

A facade module only translates: vendor request → (image bytes, :class:`BlurOptions`) → :func:`run_job`
→ vendor response. Failures are :class:`VeilError` s; each facade's error renderer (registered for its
path prefix, see :mod:`gateway.errors`) turns them into the vendor's error shape. When the job does not
finish within ``settings.gateway.facade_timeout_seconds`` a :class:`JobTimeoutError` is raised and the
job id is left on the request under :data:`JOB_ID`, so renderers can tell the client what to poll.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from aiohttp import web
from PIL import Image

from gateway.auth import verify_token
from gateway.inputs import body_limit, media_type, named_parts, read_body, read_part
from gateway.state import SETTINGS, STORE, SUBMITTER, URL_FETCHER
from gateway.urlfetch import FetchedImage
from shared.apikeys import ApiKey
from shared.errors import (
    DetectionError,
    ModelsNotReadyError,
    PayloadTooLargeError,
    PermanentError,
    TransientError,
    UnsupportedMediaError,
    ValidationError,
    VeilError,
)
from shared.jobs import BlurOptions, JobRecord, JobStatus

JOB_ID = web.RequestKey("veil_facade_job_id", str)

_MAX_TEXT_BYTES = 64 * 1024
_MAX_FIELDS = 64


class JobTimeoutError(TransientError):
    """The job was accepted but had not finished when the facade stopped waiting (503, with its id)."""

    code = "JOB_TIMEOUT"

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(
            f"the job {job_id} did not finish within {timeout:g} s; it is still running:"
            f" poll GET /v1/jobs/{job_id} with the same API key"
        )
        self.job_id = job_id


# -- forms --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormFile:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass
class Form:
    """A vendor form: text values (a name may repeat) and files, from multipart or urlencoded bodies."""

    values: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, FormFile] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        """The last value given for ``name`` (form fields first, then the query string is not merged)."""
        values = self.values.get(name)
        return values[-1] if values else None

    def __contains__(self, name: str) -> bool:
        return name in self.values or name in self.files


async def read_form(request: web.Request, max_file_bytes: int, file_fields: Iterable[str]) -> Form:
    """Parse ``multipart/form-data`` or ``application/x-www-form-urlencoded``; files are accepted only in
    ``file_fields`` and each is at most ``max_file_bytes`` (413 beyond). Other bodies: 400."""
    allowed = set(file_fields)
    limit = body_limit(max_file_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"the request body is {request.content_length} bytes, over the limit")
    content_type = media_type(request)
    try:
        if content_type == "multipart/form-data":
            return await _read_multipart(request, max_file_bytes, allowed)
        if content_type == "application/x-www-form-urlencoded":
            return _read_urlencoded(await read_body(request, limit))
    except VeilError:
        raise
    except Exception as exc:  # a malformed body is the client's problem, never a 500
        raise ValidationError(f"malformed {content_type} body: {exc or type(exc).__name__}") from exc
    raise ValidationError(f"unsupported body type {content_type!r}: send multipart/form-data")


async def _read_multipart(request: web.Request, max_file_bytes: int, allowed: set[str]) -> Form:
    form = Form()
    async for name, part in named_parts(request, _MAX_FIELDS):
        if part.filename is not None:
            if name not in allowed:
                raise ValidationError(f"unexpected file field {name!r}")
            if name in form.files:
                raise ValidationError(f"file field {name!r} given more than once")
            data = await read_part(part, max_file_bytes, f"the file {name!r}")
            form.files[name] = FormFile(data, part.filename, part.headers.get("Content-Type"))
            continue
        raw = await read_part(part, _MAX_TEXT_BYTES, f"the field {name!r}")
        try:
            text = raw.decode(part.get_charset("utf-8")).strip()
        except (UnicodeDecodeError, LookupError) as exc:
            raise ValidationError(f"field {name!r} is not valid text") from exc
        form.values.setdefault(name, []).append(text)
    return form


def _read_urlencoded(body: bytes) -> Form:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"malformed form body: {exc}") from exc
    form = Form()
    for name, value in pairs:
        form.values.setdefault(name, []).append(value.strip())
    return form


# -- auth, inputs, jobs -------------------------------------------------------------------------------------


async def verify_key(request: web.Request, token: str) -> ApiKey | None:
    """The API key for ``token`` from the one key store, or ``None``; :class:`ForbiddenError` when it lacks
    the request's scope (gateway/auth.py, the one place scopes are checked)."""
    return await verify_token(request, token)


async def fetch_url(request: web.Request, owner: str, url: str) -> FetchedImage:
    """A URL input, fetched by the same SSRF-guarded fetcher as the native ``image_url``; not fetched at
    all when ``owner`` could not submit it anyway (queue full, key over its rate)."""
    await request.config_dict[SUBMITTER].admit(owner, count=False)
    return await request.config_dict[URL_FETCHER].fetch(url)


def max_upload_bytes(request: web.Request) -> int:
    return request.config_dict[SETTINGS].limits.max_upload_bytes


def job_failure(record: JobRecord) -> VeilError:
    """The error a failed job ended with, with an HTTP status that fits its code."""
    code = record.error.code if record.error else "JOB_FAILED"
    message = record.error.message if record.error else "the job failed"
    error: VeilError
    if code in {"MODELS_NOT_READY", "UNAVAILABLE", "STORE_UNAVAILABLE", "QUEUE_UNAVAILABLE"}:
        error = ModelsNotReadyError(message) if code == "MODELS_NOT_READY" else TransientError(message)
    elif code in {"UNSUPPORTED_MEDIA_TYPE"}:
        error = UnsupportedMediaError(message)
    elif code == "PAYLOAD_TOO_LARGE":
        error = PayloadTooLargeError(message)
    elif code in {"VALIDATION_ERROR", "SOURCE_MISSING", "PERMANENT_ERROR"}:
        error = ValidationError(message)
    elif code.startswith("DETECTION"):
        error = DetectionError(message)
    else:
        error = VeilError(message)
    error.code = code
    return error


async def run_job(request: web.Request, owner: str, image: bytes, options: BlurOptions) -> JobRecord:
    """Submit ``image`` as a normal Veil job and wait for it.

    Returns the succeeded record; raises the job's own error when it failed, and :class:`JobTimeoutError`
    (with the job id also stored under ``request[JOB_ID]``) when it did not finish in time.
    """
    submitter = request.config_dict[SUBMITTER]
    timeout = request.config_dict[SETTINGS].gateway.facade_timeout_seconds
    queued = await submitter.submit(owner, image, options)
    request[JOB_ID] = queued.id
    record = await submitter.wait(queued.id, owner, timeout)
    if record.status is JobStatus.SUCCEEDED and record.result is not None:
        return record
    if record.status is JobStatus.FAILED:
        raise job_failure(record)
    raise JobTimeoutError(queued.id, timeout)


async def result_bytes(request: web.Request, record: JobRecord) -> bytes:
    """The blurred image of a succeeded job, read from the store (within the store's request timeout)."""
    if record.result is None:
        raise PermanentError("the job has no result")
    stored = await request.config_dict[SUBMITTER].transfer.get(record.result.key)
    return stored.body


async def put_upload(request: web.Request, name: str, data: bytes, content_type: str) -> str:
    """Store an auxiliary upload (a logo) under the uploads prefix; returns its key. The bucket's
    lifecycle rule removes uploads within a day; callers delete it once the job has finished."""
    key = f"{request.config_dict[STORE].settings.uploads_prefix}{name}"
    await request.config_dict[SUBMITTER].transfer.put(key, data, content_type)
    return key


async def delete_upload(request: web.Request, key: str) -> None:
    with contextlib.suppress(VeilError):  # the uploads lifecycle rule removes it within a day anyway
        await request.config_dict[SUBMITTER].transfer.delete(key)


# -- small helpers shared by the shapes ------------------------------------------------------------------


def timestamp_ms(moment: datetime | None = None) -> str:
    """``2020-05-02T12:28:09.989Z``: UTC, milliseconds, ``Z``."""
    value = (moment or datetime.now(UTC)).astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_number(name: str, value: str, low: float, high: float) -> float:
    """A form value as a number in ``[low, high]``; 400 naming the field otherwise."""
    try:
        number = float(value)
    except ValueError as exc:
        raise ValidationError(f"{name} must be a number, not {value!r}") from exc
    if not low <= number <= high:
        raise ValidationError(f"{name} must be between {low:g} and {high:g}, not {value}")
    return number


def parse_int(name: str, value: str, low: int, high: int) -> int:
    number = parse_number(name, value, low, high)
    if number != int(number):
        raise ValidationError(f"{name} must be a whole number, not {value!r}")
    return int(number)


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValidationError(f"{name} must be true or false, not {value!r}")


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
