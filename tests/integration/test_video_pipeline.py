"""The video pipeline (workers/video) on a real clip with the real models: every frame of the result is
checked, including frames where the detector is made to miss.

The clip: 60 frames at 25 fps of the scikit-image astronaut panned and scaled, a synthetic plate moving
across, a sine as AAC audio, stored turned on its side with a display matrix of 90° (as phones store
portrait video), and a GPS location and a title in the container's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from shared.errors import (
    DetectionError,
    DetectionTimeoutError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    ValidationError,
)
from shared.jobs import BlurOptions
from shared.settings import VideoSettings, WorkerSettings
from tests.images import _plate, astronaut_rgb
from workers.detectors.base import RawDetection
from workers.engine import Engine, load_engine
from workers.video import anonymize_video, probe_video
from workers.video.detect import FrameDetector, FrameFound, frame_detector
from workers.video.probe import quarter_turns

pytestmark = pytest.mark.models

RGB = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]
WIDTH, HEIGHT, FRAMES, FPS = 320, 240, 60, 25
ROTATION = 90  # counter-clockwise, as av's VideoFrame.rotation reads it
# The astronaut's face in skimage's 512x512 photo (tests/images.py).
FACE = (180, 58, 270, 178)


@dataclass(frozen=True)
class Truth:
    face: Box
    plate: Box


def _scene(i: int) -> tuple[RGB, Truth]:
    """Frame ``i`` upright, and where its face and plate are."""
    scale = 0.55 - 0.1 * i / (FRAMES - 1)
    side = round(512 * scale)
    astro = np.asarray(cv2.resize(astronaut_rgb(), (side, side), interpolation=cv2.INTER_AREA), np.uint8)
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    ox, oy = int(-20 + 40 * i / (FRAMES - 1)), -5
    x0, y0 = max(0, ox), max(0, oy)
    h, w = min(HEIGHT - y0, side - (y0 - oy)), min(WIDTH - x0, side - (x0 - ox))
    canvas[y0 : y0 + h, x0 : x0 + w] = astro[y0 - oy : y0 - oy + h, x0 - ox : x0 - ox + w]
    px, py = int(200 - 130 * i / (FRAMES - 1)), 175
    cv2.rectangle(canvas, (px - 20, py - 30), (px + 120, py + 55), (40, 38, 45), -1)
    canvas[py : py + 30, px : px + 100] = _plate("BRA2E19", 100, 30)[:, :, ::-1]
    face = tuple(round(v * scale) + (ox if k % 2 == 0 else oy) for k, v in enumerate(FACE))
    return canvas, Truth(face=face, plate=(px, py, px + 100, py + 30))  # type: ignore[arg-type]


def write_clip(path: Path, *, rotation: int = ROTATION, audio: bool = True) -> list[Truth]:
    """The test clip at ``path`` (MP4, H.264 + AAC); returns each frame's truth, in upright pixels."""
    truths = []
    with av.open(str(path), mode="w") as out:
        out.metadata["location"] = "+48.8584+002.2945/"
        out.metadata["title"] = "front door, 12 Example Street"
        video = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height = (HEIGHT, WIDTH) if rotation % 180 else (WIDTH, HEIGHT)
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=44100) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for i in range(FRAMES):
            upright, truth = _scene(i)
            truths.append(truth)
            stored = np.ascontiguousarray(np.rot90(upright, -rotation // 90))
            out.mux(video.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None:
            rate, samples = 44100, 44100 * FRAMES // FPS
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
            for start in range(0, samples, 1024):
                frame = av.AudioFrame.from_ndarray(
                    wave[None, start : start + 1024], format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = rate, start
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return truths


def upright_frames(path: Path) -> Iterator[RGB]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
            yield np.ascontiguousarray(np.rot90(rgb, frame.rotation // 90))


def detail(rgb: RGB, box: Box) -> float:
    """High-frequency energy of a region: the variance of its Laplacian (a blurred region has little)."""
    x1, y1, x2, y2 = (max(0, v) for v in box)
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def far_mask(truth: Truth, margin: int) -> npt.NDArray[np.bool_]:
    mask = np.ones((HEIGHT, WIDTH), bool)
    for x1, y1, x2, y2 in (truth.face, truth.plate):
        mask[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = False
    return mask


class Gappy:
    """The real detector, except that the passes in ``misses`` find nothing (a detector that blinks)."""

    def __init__(self, inner: FrameDetector, misses: set[int]) -> None:
        self.inner, self.misses, self.calls = inner, misses, 0
        self.face_head_margin = inner.face_head_margin
        self.frames_at_once = 1  # the pass count decides which frames miss: one at a time

    def detect_frame(self, rgb: RGB, options: BlurOptions, **kwargs: object) -> FrameFound:
        found = self.inner.detect_frame(rgb, options, **kwargs)  # type: ignore[arg-type]
        self.calls += 1
        return FrameFound([], []) if self.calls - 1 in self.misses else found


class Exploding:
    """A face in the top-left corner of every frame; raises after ``after`` calls."""

    face_head_margin = 0.1

    def __init__(self, after: int, frames_at_once: int = 1) -> None:
        self.after, self.calls, self.frames_at_once = after, 0, frames_at_once

    def detect_frame(self, rgb: RGB, options: BlurOptions, **kwargs: object) -> FrameFound:
        self.calls += 1
        if self.calls > self.after:
            raise DetectionError("face detection failed: boom")
        return FrameFound([RawDetection("face", 0.9, (10, 10, 50, 60))], [])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Truth]]:
    path = tmp_path_factory.mktemp("video") / "street.mp4"
    return path, write_clip(path)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    loaded = load_engine(WorkerSettings(providers=["CPUExecutionProvider"], model_dir=Path(".cache/models")))
    yield loaded
    loaded.close()


def test_every_frame_is_blurred_through_detector_misses(
    clip: tuple[Path, list[Truth]], engine: Engine, tmp_path: Path
) -> None:
    src, truths = clip
    dst = tmp_path / "out.mp4"
    settings = VideoSettings(detect_every_n=3, batch_frames=8)
    reports: list[tuple[int, int]] = []
    # Every third frame is searched (0, 3, ... 57); passes 5 and 6 (frames 15 and 18) find nothing.
    with frame_detector(engine) as real:
        gappy = Gappy(real, misses={5, 6})
        result = anonymize_video(
            src, dst, gappy, BlurOptions(), settings=settings, progress=lambda d, t: reports.append((d, t))
        )
    assert gappy.calls == 20
    assert result.frames_written == FRAMES and result.frames_detected == 20
    assert result.tracks_by_class == {"face": 1, "plate": 1}, result.detections
    assert {d.label: (d.first_frame, d.last_frame) for d in result.detections} == {
        "face": (0, 57),
        "plate": (0, 57),
    }
    assert reports[-1] == (FRAMES, FRAMES)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)

    info = probe_video(dst)
    assert (info.width, info.height, info.frames, info.fps) == (WIDTH, HEIGHT, FRAMES, FPS)
    assert info.rotation == ROTATION and info.codec == "h264" and info.has_audio
    with av.open(str(src)) as original, av.open(str(dst)) as result_file:
        assert "location" in original.metadata
        assert not {"location", "location-eng", "title"} & set(result_file.metadata)
        assert result_file.streams.audio[0].codec_context.name == "aac"
        sent = sum(1 for _ in original.demux(original.streams.audio[0]))
        kept = sum(1 for _ in result_file.demux(result_file.streams.audio[0]))
        assert abs(sent - kept) <= 1  # the demuxer's closing empty packet

    for i, (before, after, truth) in enumerate(
        zip(upright_frames(src), upright_frames(dst), truths, strict=True)
    ):
        for name, box in (("face", truth.face), ("plate", truth.plate)):
            assert detail(after, box) < 0.2 * detail(before, box), f"frame {i}: the {name} is not blurred"
        far = far_mask(truth, margin=30)
        diff = np.abs(after.astype(np.int16) - before.astype(np.int16))[far]
        assert diff.mean() < 3.0, f"frame {i}: pixels far from the face and plate changed"


def test_a_detector_error_fails_the_whole_video_and_leaves_no_file(
    clip: tuple[Path, list[Truth]], tmp_path: Path
) -> None:
    dst = tmp_path / "out.mp4"
    with pytest.raises(DetectionError, match="boom"):
        anonymize_video(clip[0], dst, Exploding(after=12), BlurOptions(), settings=VideoSettings())
    assert not dst.exists()


def test_expired_stops_between_batches(clip: tuple[Path, list[Truth]], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    batches = iter(range(100))
    with pytest.raises(DetectionTimeoutError):
        anonymize_video(
            clip[0],
            dst,
            Exploding(after=1000),
            BlurOptions(),
            settings=VideoSettings(batch_frames=10),
            expired=lambda: next(batches) >= 2,
        )
    assert not dst.exists()


def test_frames_searched_at_once_give_the_same_video(clip: tuple[Path, list[Truth]], tmp_path: Path) -> None:
    """A GPU engine's path: several frames of a batch searched together, on as many threads."""
    one, four = tmp_path / "one.mp4", tmp_path / "four.mp4"
    settings = VideoSettings(batch_frames=8)
    first = anonymize_video(clip[0], one, Exploding(after=1000), BlurOptions(), settings=settings)
    second = anonymize_video(
        clip[0], four, Exploding(1000, frames_at_once=4), BlurOptions(), settings=settings
    )
    assert first.frames_detected == second.frames_detected == FRAMES
    assert first.detections == second.detections and second.frames_blurred == FRAMES
    for a, b in zip(upright_frames(one), upright_frames(four), strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(DetectionError, match="boom"):
        anonymize_video(
            clip[0], tmp_path / "x.mp4", Exploding(20, frames_at_once=4), BlurOptions(), settings=settings
        )
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("rotation", [0, -90, 180])
def test_rotation_is_kept_and_boxes_land_where_they_are_seen(rotation: int, tmp_path: Path) -> None:
    """The detector sees upright frames; its box must be blurred there in the upright result too."""
    src, dst = tmp_path / "in.mp4", tmp_path / "out.mp4"
    write_clip(src, rotation=rotation, audio=False)
    anonymize_video(src, dst, Exploding(after=1000), BlurOptions(padding=0), settings=VideoSettings())
    assert probe_video(dst).rotation == rotation
    face = (10, 10, 50, 60)  # Exploding's box, upright pixels
    for i, (before, after) in enumerate(zip(upright_frames(src), upright_frames(dst), strict=True)):
        assert after.shape == (HEIGHT, WIDTH, 3)
        assert detail(after, face) < 0.2 * detail(before, face), f"frame {i}"
        diff = np.abs(after.astype(np.int16) - before.astype(np.int16))
        assert diff[100:, 100:].mean() < 3.0, f"frame {i}: pixels away from the box changed"


def test_quarter_turns() -> None:
    assert [quarter_turns(d) for d in (0, 90, -90, 180, -180, 270, 89.6)] == [0, 1, -1, 2, 2, -1, 1]


def test_audio_can_be_dropped(clip: tuple[Path, list[Truth]], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    result = anonymize_video(
        clip[0], dst, Exploding(after=1000), BlurOptions(), settings=VideoSettings(keep_audio=False)
    )
    assert result.frames_written == FRAMES
    assert not probe_video(dst).has_audio


def _small_clip(path: Path, fmt: str, video_codec: str, audio_codec: str) -> None:
    """20 frames of 160x120 in ``fmt`` with a second of silence in ``audio_codec``."""
    with av.open(str(path), mode="w", format=fmt) as out:
        video = out.add_stream(video_codec, rate=FPS)
        sound = out.add_stream(audio_codec, rate=48000)
        assert isinstance(video, av.VideoStream) and isinstance(sound, av.AudioStream)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound.layout = "mono"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 10, np.uint8), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        layout, fmt_name = sound.codec_context.layout.name, sound.codec_context.format.name
        size = sound.codec_context.frame_size or 1024
        dtype = np.float32 if fmt_name.startswith("flt") else np.int16
        for start in range(0, 48000, size):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, size), dtype), format=fmt_name, layout=layout)
            chunk.sample_rate, chunk.pts = 48000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))


@pytest.mark.parametrize(
    ("name", "fmt", "video_codec", "audio_codec", "audio_out"),
    [
        ("dashcam.mkv", "matroska", "libx264", "aac", "aac"),
        ("clip.webm", "webm", "libvpx-vp9", "libopus", "opus"),
        ("raw.mkv", "matroska", "mpeg4", "pcm_s16le", "aac"),  # PCM cannot go in MP4: re-encoded
        ("phone.mov", "mov", "libx264", "aac", "aac"),
    ],
)
def test_containers_and_audio_codecs(
    tmp_path: Path, name: str, fmt: str, video_codec: str, audio_codec: str, audio_out: str
) -> None:
    src, dst = tmp_path / name, tmp_path / "out.mp4"
    _small_clip(src, fmt, video_codec, audio_codec)
    result = anonymize_video(src, dst, Exploding(after=1000), BlurOptions(), settings=VideoSettings())
    assert result.frames_written == 20 and result.frames_blurred == 20
    with av.open(str(dst)) as out:
        assert out.format.name.startswith("mov,mp4")
        assert [(s.type, s.codec_context.name) for s in out.streams] == [
            ("video", "h264"),
            ("audio", audio_out),
        ]


def test_videos_over_the_limits_are_refused(clip: tuple[Path, list[Truth]], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    for limits, message in (
        ({"max_frames": 30}, "frames"),
        ({"max_duration_seconds": 1.0}, "s long"),
        ({"max_pixels_per_frame": 320 * 200}, "pixels"),
    ):
        with pytest.raises(PayloadTooLargeError, match=message):
            anonymize_video(
                clip[0], dst, Exploding(after=1000), BlurOptions(), settings=VideoSettings(**limits)
            )
        assert not dst.exists()


def test_probe_refuses_what_is_not_a_video(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a video at all\n" * 10)
    with pytest.raises(UnsupportedMediaError):
        probe_video(text)
    png = tmp_path / "photo.png"
    ok, data = cv2.imencode(".png", astronaut_rgb())
    assert ok
    png.write_bytes(data.tobytes())
    with pytest.raises(UnsupportedMediaError, match="not supported"):
        probe_video(png)


def test_probe_refuses_a_truncated_video(clip: tuple[Path, list[Truth]], tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip[0].read_bytes()[:2000])
    with pytest.raises((UnsupportedMediaError, ValidationError)):
        probe_video(cut)


def test_probe_reads_size_rate_rotation(clip: tuple[Path, list[Truth]]) -> None:
    info = probe_video(clip[0])
    assert (info.width, info.height, info.rotation) == (WIDTH, HEIGHT, ROTATION)
    assert info.frames == FRAMES and info.fps == FPS and abs(info.duration - FRAMES / FPS) < 0.1
    assert info.has_audio and info.codec == "h264" and "mp4" in info.container
    assert Fraction(info.fps).limit_denominator(1000) == FPS
