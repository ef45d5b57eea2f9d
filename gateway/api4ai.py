"""api4ai Image Anonymization's inputs and outputs, as options of the native API.

Inputs (``POST /v1/jobs``): the image as ``image_url``, ``image_base64``, or in JSON ``image`` as a Buffer
(``{"type": "Buffer", "data": [...]}``) or an array of bytes (see :func:`image_bytes`); ``objects_to_hide``
(``Everything`` / ``Faces only`` / ``Licence plates only``) instead of ``targets``; ``output`` (``url``,
the default, or ``base64``); ``wait`` (seconds, at most the facade timeout) to answer with the finished
job instead of 202.

Outputs (the job JSON once it succeeded): ``objects`` (``{"class": "Face" | "License plate", "box":
{"x", "y", "w", "h"}}``, normalised 0..1), ``format`` (``JPEG`` / ``PNG`` / ``WEBP``), ``width``,
``height``, and ``result.url`` (valid ``s3.result_ttl_seconds``, a day by default) or, with
``output=base64``, ``result.base64`` as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import PayloadTooLargeError, ValidationError
from shared.jobs import JobRecord, JobStatus

OBJECTS_TO_HIDE: dict[str, tuple[str, ...]] = {
    "everything": ("faces", "plates"),
    "faces only": ("faces",),
    "licence plates only": ("plates",),
    "license plates only": ("plates",),
}
OUTPUTS = ("url", "base64")
CLASS_NAMES: dict[str, Literal["Face", "License plate"]] = {"face": "Face", "plate": "License plate"}
REQUEST_KEYS = ("objects_to_hide", "output", "wait")


class Api4aiBox(BaseModel):
    x: float
    y: float
    w: float
    h: float


class Api4aiObject(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: Literal["Face", "License plate"] = Field(alias="class")
    box: Api4aiBox = Field(description="Normalised to 0..1 of the image's width and height.")


class Api4aiFields(BaseModel):
    """What api4ai's clients read, added to a succeeded job's JSON."""

    objects: list[Api4aiObject]
    format: Literal["JPEG", "PNG", "WEBP"]
    width: int
    height: int


@dataclass(frozen=True)
class ResponseOptions:
    output: str = "url"
    wait: float = 0.0


def split_options(raw: Mapping[str, object], max_wait: float) -> tuple[dict[str, object], ResponseOptions]:
    """The blur options (``objects_to_hide`` turned into ``targets``) and how to answer."""
    options = {name: value for name, value in raw.items() if name not in REQUEST_KEYS}
    hide = raw.get("objects_to_hide")
    if hide is not None:
        if not isinstance(hide, str) or hide.strip().lower() not in OBJECTS_TO_HIDE:
            raise ValidationError(
                "objects_to_hide must be 'Everything', 'Faces only' or 'Licence plates only'"
            )
        if options.get("targets") is not None:
            raise ValidationError("give objects_to_hide or targets, not both")
        options["targets"] = list(OBJECTS_TO_HIDE[hide.strip().lower()])
    return options, ResponseOptions(
        output=parse_output(raw.get("output")), wait=parse_wait(raw.get("wait"), max_wait)
    )


def parse_output(value: object) -> str:
    if value is None:
        return "url"
    if not isinstance(value, str) or value.strip().lower() not in OUTPUTS:
        raise ValidationError("output must be url or base64")
    return value.strip().lower()


def parse_wait(value: object, max_wait: float) -> float:
    """``wait`` in seconds (``true``: the longest allowed), capped at ``max_wait``."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() == "false"):
        return 0.0
    if value is True or (isinstance(value, str) and value.strip().lower() == "true"):
        return max_wait
    try:
        seconds = float(value) if isinstance(value, (int, float, str)) else float("nan")
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds <= 3600:
        raise ValidationError(f"wait must be a number of seconds or true, not {value!r}")
    return min(seconds, max_wait)


def image_bytes(value: object, max_bytes: int) -> bytes:
    """A JSON Buffer (``{"type": "Buffer", "data": [...]}``) or an array of byte values → bytes."""
    data = value
    if isinstance(value, dict):
        if value.get("type") != "Buffer" or set(value) != {"type", "data"}:
            raise ValidationError('image as an object must be a Buffer: {"type": "Buffer", "data": [...]}')
        data = value["data"]
    if not isinstance(data, list):
        raise ValidationError("image must be a Buffer or an array of bytes")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the image is {len(data)} bytes, over the limit of {max_bytes}")
    if not data:
        raise ValidationError("the image is empty")
    if not all(type(item) is int and 0 <= item <= 255 for item in data):
        raise ValidationError("image bytes must be integers 0..255")
    return bytes(data)


def objects(record: JobRecord) -> list[Api4aiObject]:
    """Detections as api4ai objects: class name and a box normalised to the image."""
    info = record.known_input()
    width, height = info.width, info.height
    found: list[Api4aiObject] = []
    for det in record.detections:
        x1, y1, x2, y2 = det.box
        box = Api4aiBox(x=x1 / width, y=y1 / height, w=(x2 - x1) / width, h=(y2 - y1) / height)
        found.append(Api4aiObject(class_=CLASS_NAMES[det.class_], box=box))
    return found


def view(record: JobRecord) -> dict[str, object]:
    """The api4ai fields added to a succeeded job's JSON (nothing for other jobs)."""
    if record.status is not JobStatus.SUCCEEDED:
        return {}
    info = record.known_input()
    fields = Api4aiFields.model_validate(
        {"objects": objects(record), "format": info.format.name, "width": info.width, "height": info.height}
    )
    return fields.model_dump(by_alias=True)
