"""Short test videos built with PyAV from the scikit-image astronaut (public domain): small, a few frames,
optionally with a sine-tone audio track, in any container the wheel's FFmpeg writes.

The astronaut's face (at about x 180-270, y 58-178 of the 512x512 photo) is kept where it is: each frame is
the photo scaled to the clip's size and shifted by a pixel or two, so a frame's face box is the photo's
box scaled (:func:`face_box`).
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import av
import cv2
import numpy as np

from tests.images import astronaut_rgb

FACE_BOX = (180, 58, 270, 178)  # in the 512x512 photo: x1, y1, x2, y2
_CODECS = {"mp4": "libx264", "mov": "libx264", "mkv": "libx264", "webm": "libvpx"}
_AUDIO_CODECS = {"mp4": "aac", "mov": "aac", "mkv": "aac", "webm": "libopus"}


def face_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The face's box in a frame of ``size`` (width, height)."""
    sx, sy = size[0] / 512, size[1] / 512
    x1, y1, x2, y2 = FACE_BOX
    return round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)


def frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` RGB frames of the astronaut at ``size``, each shifted a pixel further (a slow pan)."""
    base = cv2.resize(astronaut_rgb(), size, interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(np.roll(base, i % 3, axis=1)) for i in range(count)]


def make_clip(
    count: int = 30,
    size: tuple[int, int] = (320, 320),
    *,
    fps: int = 15,
    container: str = "mp4",
    audio: bool = True,
) -> bytes:
    """A clip of ``count`` astronaut frames (H.264 in MP4/MOV/MKV, VP8 in WebM), with a 440 Hz tone."""
    out = io.BytesIO()
    fmt = {"mkv": "matroska"}.get(container, container)
    with av.open(out, "w", format=fmt) as muxer:
        video = muxer.add_stream(_CODECS[container], rate=fps)
        assert isinstance(video, av.video.stream.VideoStream)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        sound = muxer.add_stream(_AUDIO_CODECS[container], rate=48000) if audio else None
        assert sound is None or isinstance(sound, av.audio.stream.AudioStream)
        for rgb in frames(count, size):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                muxer.mux(packet)
        for packet in video.encode():
            muxer.mux(packet)
        if sound is not None:
            _tone(muxer, sound, count / fps)
    return out.getvalue()


def _tone(muxer: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = 48000
    samples = int(rate * seconds)
    t = np.arange(samples) / rate
    wave = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, samples, frame_size):
        chunk = wave[start : start + frame_size]
        if len(chunk) < frame_size:
            chunk = np.pad(chunk, (0, frame_size - len(chunk)))
        layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.tile(chunk, (stream.codec_context.channels or 1, 1)).astype(np.float32), format="fltp",
            layout=layout if (stream.codec_context.channels or 1) == 1 else "stereo",
        )  # fmt: skip
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            muxer.mux(packet)
    for packet in stream.encode():
        muxer.mux(packet)


def audio_only(seconds: float = 1.0) -> bytes:
    """An M4A: AAC audio in an MP4 container, no video stream."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        sound = muxer.add_stream("aac", rate=48000)
        assert isinstance(sound, av.audio.stream.AudioStream)
        _tone(muxer, sound, seconds)
    return out.getvalue()
