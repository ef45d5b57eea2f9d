"""What an uploaded video is: the container sniffed, its structure checked, its first video stream probed
with PyAV (a container parser and decoder; the gateway never loads the inference stack), before anything is
stored or queued.

* Not a video, or one without a video stream (audio only), or a codec this FFmpeg cannot decode: 415.
* Over a limit (bytes, seconds, pixels per frame, a side, frames): 413, naming the figure and the limit.
* Truncated or corrupt: 400. An MP4/MOV's top-level boxes are walked by their sizes (as a PNG's chunks
  are), so a cut-off upload is named as truncated; any container must then open and decode its first
  frame. Damage further in passes here and fails the job in the worker (fail closed, nothing written).

Width and height are the stored frame's (rotation metadata is applied by the worker, which corrects the
job's ``input`` once it has decoded). Frames are the container's count, else duration x frame rate.
CPU work (a first-frame decode): callers run :func:`inspect_video` in a thread.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av

from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
from shared.imageformat import sniff_video
from shared.jobs import InputInfo, VideoFormat
from shared.settings import Settings

_ISO_FORMATS = frozenset({VideoFormat.MP4, VideoFormat.MOV})
_BOX_HEADER = struct.Struct(">I4s")


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int
    max_duration_seconds: float
    max_pixels_per_frame: int
    max_side: int
    max_frames: int

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        video = settings.video
        return cls(
            max_bytes=settings.limits.max_video_bytes,
            max_duration_seconds=video.max_duration_seconds,
            max_pixels_per_frame=video.max_pixels_per_frame,
            max_side=settings.limits.max_side,
            max_frames=video.max_frames,
        )


def iso_structure(data: bytes, fmt: VideoFormat) -> None:
    """Walk an MP4/MOV's top-level boxes by their sizes; :class:`ValidationError` when one runs past the
    end of the data (truncated) or there is no ``moov`` box (the index every player needs)."""
    size, pos, boxes = len(data), 0, set()
    while pos + 8 <= size:
        length, kind = _BOX_HEADER.unpack_from(data, pos)
        header = 8
        if length == 1:  # a 64-bit size follows the type
            if pos + 16 > size:
                break
            length, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif length == 0:  # the box runs to the end of the file
            length = size - pos
        if length < header:
            raise ValidationError(f"the {fmt.name} video is corrupt: a {kind!r} box claims {length} bytes")
        if pos + length > size:
            raise ValidationError(
                f"the {fmt.name} video is truncated: its {kind!r} box needs {pos + length} bytes,"
                f" the file has {size}"
            )
        boxes.add(kind)
        pos += length
    if pos < size:
        raise ValidationError(f"the {fmt.name} video is truncated: it ends inside a box header")
    if b"moov" not in boxes:
        raise ValidationError(f"the {fmt.name} video is truncated or corrupt: it has no index (moov box)")


def inspect_video(data: bytes, limits: VideoLimits) -> InputInfo:
    """Sniff, check and probe ``data`` (see the module's text); returns the video's ``input``."""
    fmt = sniff_video(data)
    if fmt is None:
        raise UnsupportedMediaError("not a supported video; send MP4, MOV, MKV or WebM")
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"the video is {len(data)} bytes, over the limit of {limits.max_bytes}")
    if fmt in _ISO_FORMATS:
        iso_structure(data, fmt)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                kinds = ", ".join(sorted({str(stream.type) for stream in container.streams})) or "no"
                raise UnsupportedMediaError(f"the {fmt.name} file has no video stream ({kinds} streams only)")
            stream = container.streams.video[0]
            codec = stream.codec_context.name if stream.codec_context is not None else None
            if not codec or not _decodable(codec):
                raise UnsupportedMediaError(
                    f"the {fmt.name} video's codec {codec or stream.codec_tag or '(unknown)'} cannot be"
                    " decoded; send H.264, HEVC, VP8, VP9 or AV1"
                )
            width, height = stream.codec_context.width, stream.codec_context.height
            _check_frame_size(width, height, limits)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = _duration(stream, container)
            if fps <= 0 or duration <= 0:
                raise ValidationError(f"the {fmt.name} video's frame rate or duration cannot be read")
            frames = stream.frames or round(duration * fps)
            _check_length(duration, frames, limits)
            stream.thread_count = 1  # one frame: no decoder threads to start
            if next(container.decode(stream), None) is None:
                raise ValidationError(f"the {fmt.name} video has no frame that can be decoded")
    except av.FFmpegError as exc:
        # FFmpeg's own text (e.g. "Invalid data found when processing input"), not a path or a buffer.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ValidationError(f"the {fmt.name} video is corrupt or truncated: {reason}") from exc
    return InputInfo(
        width=width,
        height=height,
        format=fmt,
        duration=round(duration, 3),
        fps=round(fps, 3),
        frames=frames,
        codec=codec,
    )


def _decodable(codec: str) -> bool:
    try:
        av.Codec(codec, "r")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


def _duration(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _check_frame_size(width: int, height: int, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        raise ValidationError(f"the video's frames have no pixels ({width}x{height})")
    if width * height > limits.max_pixels_per_frame:
        raise PayloadTooLargeError(
            f"the video's frames are {width}x{height} = {width * height} pixels, over the limit of"
            f" {limits.max_pixels_per_frame} per frame"
        )
    if max(width, height) > limits.max_side:
        raise PayloadTooLargeError(
            f"the video's frames are {width}x{height}, over the limit of {limits.max_side} pixels per side"
        )


def _check_length(duration: float, frames: int, limits: VideoLimits) -> None:
    if duration > limits.max_duration_seconds:
        raise PayloadTooLargeError(
            f"the video is {duration:.1f} s long, over the limit of {limits.max_duration_seconds:g} s"
        )
    if frames > limits.max_frames:
        raise PayloadTooLargeError(f"the video has {frames} frames, over the limit of {limits.max_frames}")
