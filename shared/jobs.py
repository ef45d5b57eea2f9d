"""The versioned job contract shared by gateway and worker; JSON on the wire (orjson), never pickle.

``JobRequest`` is what the gateway enqueues. ``JobRecord`` is the job's state kept in Redis, written by the
gateway (queued) and the worker (running, succeeded, failed) and read by clients that poll.
Bump ``CONTRACT_VERSION`` on any incompatible change; workers refuse versions they do not know. Version 2
added video jobs: only they are sent as version 2 (so a worker of before refuses them, as BAD_PAYLOAD,
instead of failing on a format it does not know); photo jobs are still sent as version 1, which every
worker takes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONTRACT_VERSION = 2
VIDEO_CONTRACT_VERSION = 2  # the first version that carries video jobs


def utcnow() -> datetime:
    return datetime.now(UTC)


class Target(StrEnum):
    FACES = "faces"
    PLATES = "plates"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class ImageFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"

    @property
    def content_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is ImageFormat.JPEG else self.value


class VideoFormat(StrEnum):
    """A video container, told by its first bytes (:func:`shared.imageformat.sniff_video`)."""

    MP4 = "mp4"
    MOV = "mov"
    MKV = "mkv"
    WEBM = "webm"

    @property
    def content_type(self) -> str:
        return _VIDEO_CONTENT_TYPES[self]

    @property
    def extension(self) -> str:
        return self.value


_VIDEO_CONTENT_TYPES = {
    VideoFormat.MP4: "video/mp4",
    VideoFormat.MOV: "video/quicktime",
    VideoFormat.MKV: "video/x-matroska",
    VideoFormat.WEBM: "video/webm",
}
MediaFormat = ImageFormat | VideoFormat


def _unset(value: object) -> bool:
    return value is None


Box4 = tuple[int, int, int, int]  # xmin, ymin, xmax, ymax


def _ordered_box(value: Box4) -> Box4:
    if value[0] >= value[2] or value[1] >= value[3]:
        raise ValueError("box must have xmin < xmax and ymin < ymax")
    return value


class Exclusion(BaseModel):
    """Where detections are ignored: margins in percent of the image's height (top/bottom) or width
    (left/right), and/or boxes in pixels. A detection is excluded when its centre lies in any of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    top: float = Field(default=0, ge=0, le=100, description="Margin at the top, in percent of the height.")
    left: float = Field(default=0, ge=0, le=100, description="Margin at the left, in percent of the width.")
    bottom: float = Field(
        default=0, ge=0, le=100, description="Margin at the bottom, in percent of the height."
    )
    right: float = Field(default=0, ge=0, le=100, description="Margin at the right, in percent of the width.")
    box: Box4 | None = Field(default=None, description="A box in pixels: [xmin, ymin, xmax, ymax].")
    # Further boxes (Plate Recognizer's repeated xmin/ymin/xmax/ymax). Left out of the JSON when empty, so
    # workers of before this field still take the jobs that don't use it.
    more_boxes: tuple[Box4, ...] = Field(
        default=(),
        max_length=20,
        exclude_if=lambda value: not value,
        description="Further boxes in pixels, each [xmin, ymin, xmax, ymax].",
    )

    @field_validator("box")
    @classmethod
    def _ordered(cls, value: Box4 | None) -> Box4 | None:
        return None if value is None else _ordered_box(value)

    @field_validator("more_boxes")
    @classmethod
    def _all_ordered(cls, value: tuple[Box4, ...]) -> tuple[Box4, ...]:
        return tuple(_ordered_box(box) for box in value)

    def covers(self, box: Sequence[float], width: int, height: int) -> bool:
        """Whether a detection's box ``[x1, y1, x2, y2]`` has its centre in an excluded part."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if cy < height * self.top / 100 or cy >= height * (1 - self.bottom / 100):
            return True
        if cx < width * self.left / 100 or cx >= width * (1 - self.right / 100):
            return True
        boxes = (self.box, *self.more_boxes) if self.box is not None else self.more_boxes
        return any(xmin <= cx <= xmax and ymin <= cy <= ymax for xmin, ymin, xmax, ymax in boxes)


MAX_SKIP_PATTERNS = 20
MAX_SKIP_PATTERN_LENGTH = 100
MAX_SPLIT_CHUNKS = 16  # each chunk is one more detector pass


@functools.lru_cache(maxsize=256)
def skip_pattern(pattern: str) -> re.Pattern[str]:
    """One ``skip_regexp`` pattern, compiled case-insensitive (raises :class:`re.error`)."""
    return re.compile(pattern, re.IGNORECASE)


def plate_key(text: str) -> str:
    """A read plate as ``skip_regexp`` matches it and facades report it: letters and digits, lower case
    ("AB-123 CD" -> "ab123cd")."""
    return "".join(ch for ch in text if ch.isalnum()).lower()


def check_skip_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    """``patterns`` if they are usable as ``skip_regexp``: a bounded count of bounded, compiling regular
    expressions; else :class:`ValueError` saying what is wrong."""
    if len(patterns) > MAX_SKIP_PATTERNS:
        raise ValueError(f"at most {MAX_SKIP_PATTERNS} patterns")
    for pattern in patterns:
        if not pattern or len(pattern) > MAX_SKIP_PATTERN_LENGTH:
            raise ValueError(f"each pattern must have 1 to {MAX_SKIP_PATTERN_LENGTH} characters")
        try:
            skip_pattern(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
    return tuple(patterns)


class BlurOptions(BaseModel):
    """What to find and how to hide it. Every field has a documented range; the gateway validates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[Target, ...] = Field(
        default=(Target.FACES, Target.PLATES),
        json_schema_extra={"minItems": 1},
        description="What to blur: faces, plates or both (in forms: comma-separated, e.g. `faces,plates`).",
    )
    blur: float | None = Field(
        default=None,
        ge=1,
        le=200,
        description="Gaussian sigma in pixels. Unset: scaled to each region's size, so large faces are hidden"
        " as well as small ones.",
    )
    padding: float = Field(
        default=0.15, ge=0, le=1, description="Added on each side, as a ratio of the box's width/height."
    )
    shrink: float = Field(
        default=0.0,
        ge=0,
        le=0.4,
        description="Taken back from each side after padding, as a ratio of the box's width/height.",
    )
    min_score: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Detections scoring under this are ignored. Unset: each detector's tuned default.",
    )
    keep_metadata: bool = Field(
        default=False,
        description="Keep allowlisted EXIF tags (orientation is applied to the pixels either way).",
    )
    # -- vendor-facade features (all optional; the defaults keep the behaviour above) --------------------
    # Blur strength per class, Plate Recognizer style: 0 = detect and report but do not blur, 1..10 =
    # weak..strong (overrides `blur` for that class). None: `blur` applies. Set by that facade only.
    face_strength: int | None = Field(default=None, ge=0, le=10)
    plate_strength: int | None = Field(default=None, ge=0, le=10)
    # Object key (in Veil's bucket, under the uploads prefix) of a logo warped onto each plate polygon.
    # Set by the gateway's facades only, never by clients.
    logo_key: str | None = Field(default=None, min_length=1, max_length=1024)
    exclusion: Exclusion | None = Field(
        default=None,
        description="Parts of the image where detections are neither blurred nor reported (in forms: a JSON"
        " object).",
    )
    split: bool = Field(
        default=False,
        description="Also detect on overlapping full-height chunks (panoramas).",
    )
    # Left out of the JSON when unset, so workers of before this option still take the jobs that don't use it.
    split_chunks: int | None = Field(
        default=None,
        ge=2,
        le=MAX_SPLIT_CHUNKS,
        exclude_if=lambda value: value is None,
        description="With `split`: this many chunks (Plate Recognizer's `split=N`). Unset: as many chunks"
        " of about 4:3 as the width needs.",
    )
    split_overlap: float = Field(
        default=20, ge=0, le=90, description="How much neighbouring chunks overlap, in percent of a chunk."
    )
    face_max_side: int | None = Field(
        default=None,
        ge=64,
        le=16384,
        description="Longest side faces are detected at, for this job. Unset: the worker's setting.",
    )
    # Left out of the JSON when empty, so workers of before this option still take the jobs that don't use it.
    skip_regexp: tuple[str, ...] = Field(
        default=(),
        exclude_if=lambda value: not value,
        json_schema_extra={
            "maxItems": MAX_SKIP_PATTERNS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_SKIP_PATTERN_LENGTH},
        },
        description="Plates whose read text fully matches one of these regular expressions"
        " (case-insensitively, letters and digits only: `AB-123 CD` is matched as `ab123cd`) are left"
        " unblurred and reported as skipped; a plate whose text could not be read is always blurred. A"
        " single pattern may be given as a string.",
    )

    # Videos only; left out of the JSON when unset, so workers of before still take photo jobs.
    keep_audio: bool | None = Field(
        default=None,
        exclude_if=_unset,
        description="Videos: copy the audio stream untouched (it may carry voices and plates read aloud);"
        " false drops it. Unset: the worker's `VEIL_VIDEO__KEEP_AUDIO` (true).",
    )
    detect_every_n: int | None = Field(
        default=None,
        ge=1,
        le=30,
        exclude_if=_unset,
        description="Videos: detect on every Nth frame only and interpolate the tracks between (faster,"
        " looser boxes). Unset: the worker's `VEIL_VIDEO__DETECT_EVERY_N` (1).",
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _parse_targets(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip().lower() for part in value.split(",") if part.strip()]
            if not parts:
                raise ValueError("targets must name faces, plates or both")
            return tuple(parts)
        return value

    @field_validator("skip_regexp", mode="before")
    @classmethod
    def _one_pattern(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("skip_regexp")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_skip_patterns(value)

    def skip_patterns(self) -> list[re.Pattern[str]]:
        """``skip_regexp`` compiled (case-insensitive)."""
        return [skip_pattern(pattern) for pattern in self.skip_regexp]

    @model_validator(mode="after")
    def _chunks_need_split(self) -> BlurOptions:
        if self.split_chunks is not None and not self.split:
            raise ValueError("split_chunks needs split: true")
        return self

    @field_validator("targets")
    @classmethod
    def _dedupe(cls, value: tuple[Target, ...]) -> tuple[Target, ...]:
        if not value:
            raise ValueError("targets must name faces, plates or both")
        return tuple(dict.fromkeys(value))


class ObjectRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str


class InputInfo(BaseModel):
    width: int
    height: int
    format: ImageFormat | VideoFormat
    # Videos only (left out of photos' JSON): seconds, frames per second, frames (counted by the worker;
    # the gateway's is the container's figure, or duration x fps where it has none), the video codec.
    duration: float | None = Field(default=None, exclude_if=_unset, description="Videos: seconds.")
    fps: float | None = Field(default=None, exclude_if=_unset, description="Videos: frames per second.")
    frames: int | None = Field(
        default=None,
        exclude_if=_unset,
        description="Videos: frames (the container's count until a worker has counted them).",
    )
    codec: str | None = Field(
        default=None, exclude_if=_unset, description="Videos: the input's video codec (FFmpeg's name)."
    )

    @property
    def is_video(self) -> bool:
        return isinstance(self.format, VideoFormat)


class JobRequest(BaseModel):
    """The arq payload: everything a worker needs, nothing it must look up elsewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 1: photos; 2: also videos (see the module's text). Set from the input by :meth:`versioned`.
    version: Literal[1, 2] = 1
    id: str
    owner: str  # API key id; a job is visible to its owner only
    source: ObjectRef
    # Whether the worker deletes `source` when the job ends (uploads: yes; a user's own S3 object: no).
    delete_source: bool = True
    input: InputInfo  # probed from the header before queueing; the worker corrects it after decoding
    options: BlurOptions = Field(default_factory=BlurOptions)
    created_at: datetime = Field(default_factory=utcnow)
    # Also write the blurred image here (bulk jobs' `output`), besides Veil's own results prefix.
    output: ObjectRef | None = None
    # POSTed a signed copy of the job when it ends (shared/webhooks.py).
    callback_url: str | None = None
    bulk_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def versioned(cls, data: object) -> object:
        """A video job is version 2 whoever builds it: a worker of before must refuse it unread."""
        if isinstance(data, dict) and "version" not in data:
            info = data.get("input")
            video = info.is_video if isinstance(info, InputInfo) else _names_video(info)
            if video:
                return {**data, "version": VIDEO_CONTRACT_VERSION}
        return data

    @model_validator(mode="after")
    def _video_needs_version(self) -> JobRequest:
        if self.input.is_video and self.version < VIDEO_CONTRACT_VERSION:
            raise ValueError(f"a video job needs contract version {VIDEO_CONTRACT_VERSION}")
        return self


def _names_video(info: object) -> bool:
    return isinstance(info, dict) and info.get("format") in set(VideoFormat)


Box = Annotated[list[float], Field(min_length=4, max_length=4)]


class Detection(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: Literal["face", "plate"] = Field(alias="class")
    score: float
    box: list[int]  # [x1, y1, x2, y2] in pixels of the (orientation-corrected) original
    polygon: list[list[int]] | None = None
    # Which detectors found it, e.g. ["platedet", "text"] or ["centerface", "retinaface"] (records of older
    # workers: empty).
    sources: list[str] = Field(default_factory=list)
    # Plates: the text read on it and the recogniser's score (None: not read).
    text: str | None = None
    text_score: float | None = None
    # A plate left unblurred because its text matched the job's skip_regexp.
    skipped: bool = False
    # Videos: one detection per track, its best sighting's box; blurred from first_frame to last_frame.
    first_frame: int | None = Field(default=None, exclude_if=_unset)
    last_frame: int | None = Field(default=None, exclude_if=_unset)


class PublicResult(BaseModel):
    """A succeeded job's result as its owner sees it."""

    url: str = Field(description="Presigned URL of the blurred image, valid until `expires_at`.")
    expires_at: datetime
    content_type: str = Field(examples=["image/jpeg"])


class ResultInfo(PublicResult):
    key: str  # the object's key in Veil's bucket: never shown to clients


class JobProgress(BaseModel):
    """A running video job's progress, written by the worker about once a second."""

    frames_done: int = Field(ge=0)
    frames_total: int = Field(ge=0, description="The frames the video holds (the container's count).")
    eta_seconds: float | None = Field(
        default=None, description="Time left at the rate so far; null until the first frames are done."
    )


class JobError(BaseModel):
    code: str
    message: str


# What clients never see of a job record (JobRecord.public()).
PRIVATE_JOB_FIELDS = frozenset({"owner", "attempts"})


class JobRecord(BaseModel):
    """A job's state as clients see it (minus ``owner`` and internal fields)."""

    id: str
    owner: str
    status: JobStatus = JobStatus.QUEUED
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    # None only for a job that failed before its image could be read (a bulk child whose object is not a
    # supported image): no size or format is known, and none is made up.
    input: InputInfo | None = None
    options: BlurOptions
    detections: list[Detection] = Field(default_factory=list)
    blurred_regions: list[list[int]] = Field(default_factory=list)
    result: ResultInfo | None = None
    # Set when the owner deleted the result before it expired (DELETE /v1/jobs/{id}).
    result_deleted_at: datetime | None = None
    error: JobError | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # Video jobs: frames done while running, all of them once succeeded (null for photos).
    progress: JobProgress | None = Field(
        default=None, description="Video jobs: frames done and left while running; null for photos."
    )

    def known_input(self) -> InputInfo:
        """The input's size and format, for a job that was queued (every job but a failed bulk child)."""
        if self.input is None:
            raise ValueError(f"job {self.id} failed before its input was read")
        return self.input

    def public(self) -> dict[str, object]:
        data = self.model_dump(mode="json", by_alias=True, exclude=set(PRIVATE_JOB_FIELDS))
        if data.get("result"):
            data["result"].pop("key", None)
        data["links"] = {"self": f"/v1/jobs/{self.id}", "result": f"/v1/jobs/{self.id}/result"}
        return data
