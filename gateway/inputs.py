"""Reading a submission from a request: which image (upload, base64, URL or S3 object) and the raw options.
A video comes the same ways (its multipart field may also be called ``video``); what it is, is told by its
bytes later (gateway/submission.py), never by the field's name.

Bodies are read as streams with hard byte limits, so an oversized upload is refused (413) without being
held in memory. Everything wrong with the body is a 400 (or 413); nothing here may surface as a 500.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from aiohttp import BodyPartReader, hdrs, web

from gateway.api4ai import image_bytes
from gateway.limitedread import CHUNK_BYTES, part_chunks, read_limited
from shared.errors import PayloadTooLargeError, ValidationError, VeilError
from shared.jobs import ObjectRef
from shared.objectkeys import check_key

log = logging.getLogger(__name__)

IMAGE_FIELD = "image"
VIDEO_FIELD = "video"  # an alias of IMAGE_FIELD in multipart bodies, for videos
_FILE_FIELDS = (IMAGE_FIELD, VIDEO_FIELD)
BASE64_KEY = "image_base64"
URL_KEY = "image_url"
S3_KEY = "s3"
INPUT_KEYS = (IMAGE_FIELD, BASE64_KEY, URL_KEY, S3_KEY)

_MAX_OPTION_BYTES = 4096
_MAX_PARTS = 32
# Room for base64's 4/3 expansion plus JSON keys and options, or multipart framing.
_OVERHEAD_BYTES = 256 * 1024
_DATA_URL = re.compile(r"^data:(?:image/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class UploadedImage:
    """Image bytes sent in the request (multipart file or base64)."""

    data: bytes


@dataclass(frozen=True)
class UrlImage:
    url: str


@dataclass(frozen=True)
class StoredImage:
    """An object already in the store, named by the client."""

    ref: ObjectRef


ImageInput = UploadedImage | UrlImage | StoredImage


@dataclass(frozen=True)
class RawSubmission:
    image: ImageInput
    # Option values as sent (strings from forms, JSON values from JSON); validated by gateway.options.
    options: dict[str, object] = field(default_factory=dict)


def body_limit(max_upload_bytes: int) -> int:
    """The largest request body worth reading for an image of at most ``max_upload_bytes``."""
    return max_upload_bytes * 4 // 3 + _OVERHEAD_BYTES


def media_type(request: web.Request) -> str:
    """The body's media type, lower-cased, parameters dropped; what aiohttp's ``request.content_type``
    returns for a well-formed header, without its parse through :mod:`email` (~0.4 ms a request)."""
    raw = request.headers.get(hdrs.CONTENT_TYPE, "")
    return raw.partition(";")[0].strip().lower() or "application/octet-stream"


async def read_submission(request: web.Request, max_upload_bytes: int) -> RawSubmission:
    """Parse a ``multipart/form-data`` or ``application/json`` submission."""
    limit = body_limit(max_upload_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(
            f"the request body is {request.content_length} bytes;"
            f" uploads may be at most {max_upload_bytes} bytes"
        )
    content_type = media_type(request)
    try:
        if content_type == "multipart/form-data":
            return await _read_multipart(request, max_upload_bytes)
        if content_type == "application/json" or content_type.endswith("+json"):
            return _from_json(await read_body(request, limit), max_upload_bytes)
        if content_type == "application/x-www-form-urlencoded":
            return _from_urlencoded(await read_body(request, limit), max_upload_bytes)
    except VeilError:
        raise
    except Exception as exc:  # a malformed body is the client's problem, never a 500
        log.debug("malformed %s body", content_type, exc_info=True)
        raise ValidationError(f"malformed {content_type} body: {exc or type(exc).__name__}") from exc
    raise ValidationError(
        f"unsupported body type {content_type!r}: send multipart/form-data with an 'image' file,"
        " or application/json with image_base64, image_url or s3 (or a form with image_url or image_base64)"
    )


def _exactly_one(found: dict[str, object]) -> str:
    if not found:
        raise ValidationError(
            "no image: send a multipart file field 'image', or JSON with image_base64, image_url or s3"
        )
    if len(found) > 1:
        raise ValidationError(f"send exactly one image input, got {len(found)}: {', '.join(found)}")
    return next(iter(found))


# -- multipart ----------------------------------------------------------------------------------------


async def _read_multipart(request: web.Request, max_upload_bytes: int) -> RawSubmission:
    inputs: dict[str, object] = {}
    options: dict[str, object] = {}
    async for name, part in named_parts(request, _MAX_PARTS):
        if name in inputs or name in options:
            raise ValidationError(f"field {name!r} given more than once")
        if name in _FILE_FIELDS:
            inputs[name] = await read_part(part, max_upload_bytes)
        elif part.filename is not None:
            raise ValidationError(f"unexpected file field {name!r}: send the image in the field 'image'")
        elif name == BASE64_KEY:
            inputs[name] = await _read_text(name, part, body_limit(max_upload_bytes), oversize_is_413=True)
        elif name == URL_KEY:
            inputs[name] = await _read_text(name, part, 8192)
        else:
            options[name] = await _read_text(name, part, _MAX_OPTION_BYTES)
    kind = _exactly_one(inputs)
    value = inputs[kind]
    if kind in _FILE_FIELDS:
        assert isinstance(value, bytes)
        if not value:
            raise ValidationError(f"the {kind!r} field is empty")
        return RawSubmission(UploadedImage(value), options)
    assert isinstance(value, str)
    return RawSubmission(_text_input(kind, value, max_upload_bytes), options)


async def read_part(part: BodyPartReader, limit: int, what: str = "the image") -> bytes:
    """One multipart part's body, refusing (413) anything over ``limit`` bytes while it streams."""
    return await read_limited(part_chunks(part), limit, what)


async def named_parts(request: web.Request, max_parts: int) -> AsyncIterator[tuple[str, BodyPartReader]]:
    """The parts of a flat multipart body with their names; 400 for nested bodies, nameless or too many
    parts."""
    reader = await request.multipart()
    count = 0
    while (part := await reader.next()) is not None:
        count += 1
        if count > max_parts:
            raise ValidationError(f"too many multipart fields (at most {max_parts})")
        if not isinstance(part, BodyPartReader):
            raise ValidationError("nested multipart bodies are not supported")
        name = part.name  # parsed from Content-Disposition on every access
        if not name:
            raise ValidationError("a multipart field has no name")
        yield name, part


async def _read_text(name: str, part: BodyPartReader, limit: int, *, oversize_is_413: bool = False) -> str:
    try:
        raw = await read_part(part, limit)
    except PayloadTooLargeError as exc:
        if oversize_is_413:
            raise
        raise ValidationError(f"field {name!r} is too long") from exc
    try:
        return raw.decode(part.get_charset("utf-8")).strip()
    except (UnicodeDecodeError, LookupError) as exc:
        raise ValidationError(f"field {name!r} is not valid text") from exc


# -- urlencoded form (image_url or image_base64 plus options) ---------------------------------------------


def _from_urlencoded(body: bytes, max_upload_bytes: int) -> RawSubmission:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"malformed form body: {exc}") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise ValidationError(f"field {name!r} given more than once")
        fields[name] = value.strip()
    if IMAGE_FIELD in fields or S3_KEY in fields:
        raise ValidationError(f"a form body can carry {BASE64_KEY} or {URL_KEY}; upload files as multipart")
    inputs: dict[str, object] = {key: fields.pop(key) for key in (BASE64_KEY, URL_KEY) if key in fields}
    kind = _exactly_one(inputs)
    text = inputs[kind]
    assert isinstance(text, str)
    return RawSubmission(_text_input(kind, text, max_upload_bytes), dict(fields))


# -- JSON ---------------------------------------------------------------------------------------------


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes while it streams."""
    return await read_limited(request.content.iter_chunked(CHUNK_BYTES), limit, "the request body")


def _from_json(body: bytes, max_upload_bytes: int) -> RawSubmission:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValidationError(f"the JSON body must be an object, not {_json_type(document)}")
    if IMAGE_FIELD in document:
        value = document.pop(IMAGE_FIELD)
        if not isinstance(value, (dict, list)):
            raise ValidationError(
                "'image' is the multipart file field; in JSON use image_base64, image_url or s3"
                ' (or image as a Buffer {"type": "Buffer", "data": [...]} or an array of bytes)'
            )
        if any(document.get(key) is not None for key in INPUT_KEYS):
            raise ValidationError("send exactly one image input")
        options = {key: value for key, value in document.items() if key not in INPUT_KEYS}
        return RawSubmission(UploadedImage(image_bytes(value, max_upload_bytes)), options)
    inputs = {key: document[key] for key in INPUT_KEYS if document.get(key) is not None}
    options = {key: value for key, value in document.items() if key not in INPUT_KEYS}
    kind = _exactly_one(inputs)
    value = inputs[kind]
    if kind == S3_KEY:
        return RawSubmission(StoredImage(parse_object_ref(value)), options)
    if not isinstance(value, str):
        raise ValidationError(f"{kind} must be a string, not {_json_type(value)}")
    return RawSubmission(_text_input(kind, value, max_upload_bytes), options)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    names[float] = "a number"
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _text_input(kind: str, value: str, max_upload_bytes: int) -> ImageInput:
    if kind == BASE64_KEY:
        return UploadedImage(decode_base64(value, max_upload_bytes))
    url = value.strip()
    if not url:
        raise ValidationError("image_url is empty")
    if len(url) > 8192:
        raise ValidationError("image_url is too long")
    return UrlImage(url)


def decode_base64(value: str, max_bytes: int) -> bytes:
    """Standard or URL-safe base64, padding optional, with an optional ``data:image/...;base64,`` prefix."""
    text = value.strip()
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    elif text[:5].lower() == "data:":
        raise ValidationError("image_base64: a data: URL must be of the form data:image/...;base64,<data>")
    text = "".join(text.split())
    if not text:
        raise ValidationError("image_base64 is empty")
    if len(text) // 4 * 3 > max_bytes + 3:
        raise PayloadTooLargeError(f"the image is over the limit of {max_bytes} bytes")
    altchars = b"-_" if ("-" in text or "_" in text) else None
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"image_base64 is not valid base64: {exc}") from exc
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the image is {len(data)} bytes, over the limit of {max_bytes}")
    if not data:
        raise ValidationError("image_base64 is empty")
    return data


def parse_object_ref(value: object) -> ObjectRef:
    """``{"bucket": "...", "key": "..."}`` → :class:`ObjectRef`: the key only in its canonical form
    (:mod:`shared.objectkeys`); which buckets may be read is checked by the submitter."""
    shape = 's3 must be an object {"bucket": "...", "key": "..."}'
    if not isinstance(value, dict) or set(value) != {"bucket", "key"}:
        raise ValidationError(shape)
    bucket, key = value["bucket"], value["key"]
    if not isinstance(bucket, str) or not isinstance(key, str) or not bucket.strip() or not key:
        raise ValidationError(shape + " with non-empty strings")
    return ObjectRef(bucket=bucket.strip(), key=check_key(key, "s3.key"))
