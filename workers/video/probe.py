"""What a video is, from its container and first frame: size, rate, length, codec, rotation, audio.

Only MP4 / MOV / MKV / WebM with a video stream FFmpeg can decode are videos here; anything else is
``UNSUPPORTED_MEDIA_TYPE``. A container that opens but whose first frame does not decode is a bad upload
(``VALIDATION_ERROR``). The numbers come from the container's header and may lie: the pipeline counts
frames itself while decoding and stops at the limits (:func:`check_limits`) whatever the header said.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.video.stream import VideoStream

from shared.errors import PayloadTooLargeError, UnsupportedMediaError, ValidationError
from shared.settings import VideoSettings

# FFmpeg demuxer names (a demuxer may have several, comma-separated: "mov,mp4,m4a,3gp,3g2,mj2").
CONTAINERS = frozenset({"mov", "mp4", "matroska", "webm"})
_AV_TIME_BASE = 1_000_000  # FFmpeg's unit of a container's duration


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as displayed: after the rotation below (a portrait phone video is taller than wide)
    height: int
    fps: float  # average frame rate
    frames: int  # from the header (or duration x fps when the container does not say)
    duration: float  # seconds
    codec: str  # FFmpeg's decoder name: h264, hevc, vp9, av1, ...
    rotation: int  # degrees counter-clockwise the stored frames are turned for display: 0, 90, 180, -90
    has_audio: bool
    container: str  # FFmpeg's demuxer name


def open_input(path: Path) -> InputContainer:
    """The container at ``path``, or :class:`UnsupportedMediaError` when FFmpeg cannot read it at all."""
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise UnsupportedMediaError("not a video Veil can read (MP4, MOV, MKV or WebM)") from exc


def video_stream(container: InputContainer) -> VideoStream:
    names = set(container.format.name.split(","))
    if not names & CONTAINERS:
        raise UnsupportedMediaError(
            f"video container {container.format.name!r} is not supported: send MP4, MOV, MKV or WebM"
        )
    if not container.streams.video:
        raise UnsupportedMediaError("the file has no video stream")
    streams = [s for s in container.streams.video if s.codec_context is not None]
    if not streams:
        raise UnsupportedMediaError("the video's codec cannot be decoded")
    return streams[0]


def frame_rate(stream: VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate.numerator, rate.denominator)
    raise ValidationError("the video has no frame rate")


def probe_video(path: Path) -> VideoInfo:
    """Describe the video at ``path`` (decodes its first frame: the rotation rides on it)."""
    with open_input(path) as container:
        stream = video_stream(container)
        fps = frame_rate(stream)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise ValidationError("the video could not be decoded") from exc
        if first is None:
            raise ValidationError("the video has no frames")
        rotation = quarter_turns(first.rotation) * 90
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / _AV_TIME_BASE
        else:
            duration = (stream.frames or 0) / float(fps)
        frames = stream.frames or round(duration * float(fps))
        width, height = first.width, first.height
        if rotation % 180:
            width, height = height, width
        return VideoInfo(
            width=width,
            height=height,
            fps=round(float(fps), 3),
            frames=max(1, frames),
            duration=round(duration, 3),
            codec=stream.codec_context.name,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            container=container.format.name,
        )


def quarter_turns(degrees: float) -> int:
    """A display rotation as quarter turns counter-clockwise: -1, 0, 1 or 2 (the nearest; display
    matrices in the wild are multiples of 90°)."""
    turns = round(degrees / 90) % 4
    return -1 if turns == 3 else turns


def check_limits(info: VideoInfo, settings: VideoSettings) -> None:
    """:class:`PayloadTooLargeError` for a video over the configured duration, frame size or frame count."""
    if info.duration > settings.max_duration_seconds:
        raise PayloadTooLargeError(
            f"video is {info.duration:g} s long, over the limit of {settings.max_duration_seconds:g} s"
        )
    check_frame_size(info.width, info.height, settings)
    check_frame_count(info.frames, settings)


def check_frame_size(width: int, height: int, settings: VideoSettings) -> None:
    if width * height > settings.max_pixels_per_frame:
        raise PayloadTooLargeError(
            f"video frames are {width}x{height} pixels, over the limit of {settings.max_pixels_per_frame}"
        )


def check_frame_count(frames: int, settings: VideoSettings) -> None:
    if frames > settings.max_frames:
        raise PayloadTooLargeError(f"video has over {settings.max_frames} frames, the limit")
