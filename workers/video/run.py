"""One video through the worker: decode → detect → track → blur → encode, streaming, failing closed.

Frames flow through a small look-ahead window: a frame is blurred and encoded only once the tracker says
its boxes are final (:meth:`Tracker.settled`: ``horizon`` frames later, no sighting can reach back to it),
so a detector miss is bridged backwards as well as forwards, and at most ``horizon + batch_frames`` decoded
frames are held at once, whatever the video's length. Any error fails the whole video: the file at
``dst`` is deleted and the error raised (a decode error as ``VALIDATION_ERROR``, a detector error as
``DETECTION_FAILED``, ``expired()`` as ``DETECTION_TIMEOUT``); nothing is written anywhere else.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame

from shared.errors import DetectionError, ValidationError, VeilError
from shared.jobs import BlurOptions
from shared.settings import VideoSettings
from workers.detection import deadline_check, head_cover, plate_cover
from workers.detectors.base import BoxF, RawDetection
from workers.detectors.faces import DEFAULT_MAX_SIDE
from workers.video import probe
from workers.video.decode import demux
from workers.video.detect import FrameDetector, frame_detector
from workers.video.encode import CONTENT_TYPE, EXTENSION, VideoWriter
from workers.video.hide import hide
from workers.video.tracks import Track, Tracker, TrackParams

RGB = npt.NDArray[np.uint8]
Progress = Callable[[int, int], None]

# The stages timed (ms, summed over the video): what `veil bench --video` reports per stage.
STAGES = ("decode", "detect", "track", "blur", "encode")


@dataclass(frozen=True)
class TrackedDetection:
    """One tracked object: its best sighting (box in displayed pixels), and the frames it was seen on."""

    label: str  # face | plate
    score: float
    box: BoxF
    first_frame: int
    last_frame: int
    sources: tuple[str, ...]
    text: str | None = None

    @property
    def cls(self) -> str:
        return self.label


@dataclass
class VideoResult:
    info: probe.VideoInfo
    frames_written: int
    detections: list[TrackedDetection]
    tracks_by_class: dict[str, int]
    # decode, detect (detect_faces, detect_plates its parts), track, blur, encode; ms over the whole video.
    timings_ms: dict[str, float]
    frames_detected: int = 0
    content_type: str = CONTENT_TYPE
    extension: str = EXTENSION
    frames_blurred: int = field(default=0)


def track_params(settings: VideoSettings) -> TrackParams:
    """The tracker's frame counts from the settings' detection passes: with every Nth frame searched, a
    missed pass is N frames, and an object may have been there N - 1 frames before it was first seen."""
    n = settings.detect_every_n
    return TrackParams(
        iou=settings.track_iou,
        max_gap=(settings.track_max_gap + 1) * n - 1,
        extend=settings.track_extend + n - 1,
        growth=settings.track_growth,
    )


def anonymize_video(
    src: Path,
    dst: Path,
    engine: object,
    options: BlurOptions,
    *,
    settings: VideoSettings,
    face_max_side: int = DEFAULT_MAX_SIDE,
    progress: Progress | None = None,
    expired: Callable[[], bool] | None = None,
) -> VideoResult:
    """Blur every face and plate of the video at ``src`` into an MP4 at ``dst`` (see the module's doc).

    ``engine``: the worker's runner (:class:`workers.engine.Engine`, an ``Anonymizer``, or any
    :class:`~workers.video.detect.FrameDetector`). ``progress(done, total)`` after each batch of frames;
    ``expired()`` is checked between batches and model passes."""
    try:
        return _anonymize(src, dst, engine, options, settings, face_max_side, progress, expired)
    except BaseException as exc:
        dst.unlink(missing_ok=True)  # fail closed: no partial video anywhere
        if isinstance(exc, VeilError) or not isinstance(exc, Exception):
            raise
        raise DetectionError(f"video processing failed: {type(exc).__name__}: {exc}") from exc


def _anonymize(
    src: Path,
    dst: Path,
    engine: object,
    options: BlurOptions,
    settings: VideoSettings,
    face_max_side: int,
    progress: Progress | None,
    expired: Callable[[], bool] | None,
) -> VideoResult:
    info = probe.probe_video(src)
    probe.check_limits(info, settings)
    with probe.open_input(src) as container, frame_detector(engine) as detector:
        stream = probe.video_stream(container)
        if stream.time_base is None:
            raise ValidationError("the video stream has no time base")
        audio = container.streams.audio[0] if settings.keep_audio and container.streams.audio else None
        stored_w, stored_h = (info.height, info.width) if info.rotation % 180 else (info.width, info.height)
        writer = VideoWriter(
            dst,
            width=stored_w,
            height=stored_h,
            rate=probe.frame_rate(stream),
            time_base=stream.time_base,
            rotation=info.rotation,
            audio=audio,
            settings=settings,
        )
        try:
            run = _Run(info, detector, options, settings, face_max_side, writer, progress, expired)
            run.all(demux(container, stream, audio))
            with run.stage("encode"):
                writer.close()
        except BaseException:
            writer.abort()
            raise
    return run.result()


class _Run:
    """The loop's state: the window of frames not yet final, the tracker, the counters and timings."""

    def __init__(
        self,
        info: probe.VideoInfo,
        detector: FrameDetector,
        options: BlurOptions,
        settings: VideoSettings,
        face_max_side: int,
        writer: VideoWriter,
        progress: Progress | None,
        expired: Callable[[], bool] | None,
    ) -> None:
        self.info = info
        self.detector = detector
        self.options = options
        self.settings = settings
        self.face_max_side = face_max_side
        self.writer = writer
        self.progress = progress
        self.expired = expired
        self.check = deadline_check(expired)
        self.tracker = Tracker(track_params(settings))
        self.window: deque[tuple[int, VideoFrame]] = deque()
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.decoded = 0
        self.written = 0
        self.detected = 0
        self.blurred = 0
        self.last_pts = -1
        self.size: tuple[int, int] | None = None  # stored width, height of the first frame
        self.lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += (time.perf_counter() - start) * 1000

    def all(self, items: Iterator[VideoFrame | Packet[Stream]]) -> None:
        batch: list[tuple[int, VideoFrame]] = []
        while True:
            with self.stage("decode"):
                item = next(items, None)
            if item is None:
                break
            if isinstance(item, Packet):
                with self.stage("encode"):
                    self.writer.audio(item)
                continue
            self.decoded += 1
            probe.check_frame_count(self.decoded, self.settings)
            batch.append((self.decoded - 1, item))
            if len(batch) >= self.settings.batch_frames:
                self.batch(batch)
                batch = []
        if batch:
            self.batch(batch)
        self.emit(final=True)
        self.report(final=True)

    def batch(self, frames: list[tuple[int, VideoFrame]]) -> None:
        """Detect on the batch's searched frames, then write every frame that became final."""
        self.check()
        self.window.extend(frames)
        searched = [(index, frame) for index, frame in frames if index % self.settings.detect_every_n == 0]
        at_once = max(1, min(getattr(self.detector, "frames_at_once", 1), len(searched)))
        if at_once > 1:  # a GPU engine: the frames go to the batcher together
            with ThreadPoolExecutor(at_once, thread_name_prefix="video-frames") as pool:
                found = list(pool.map(lambda item: self.detect(item[1]), searched))
        else:
            found = [self.detect(frame) for _, frame in searched]
        for (index, _), covers in zip(searched, found, strict=True):
            with self.stage("track"):
                self.tracker.update(index, covers)
        self.emit(final=False)
        self.report()

    def report(self, *, final: bool = False) -> None:
        """``progress(done, total)``: the total is the header's count until the end, then the true one."""
        if self.progress is not None:
            self.progress(self.written, self.decoded if final else max(self.info.frames, self.decoded))

    def detect(self, frame: VideoFrame) -> list[tuple[BoxF, RawDetection]]:
        """One frame's covers (may run on several threads at once: its timings are merged under a lock)."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        rgb = self.upright(frame)
        converted = time.perf_counter()
        found = self.detector.detect_frame(
            rgb, self.options, face_max_side=self.face_max_side, expired=self.expired, timings=timings
        )
        timings["decode"] = (converted - start) * 1000
        timings["detect"] = (time.perf_counter() - converted) * 1000
        with self.lock:
            self.detected += 1
            for name, ms in timings.items():
                self.timings[name] = self.timings.get(name, 0.0) + ms
        margin = self.detector.face_head_margin
        covers = [(head_cover(det.box, margin), det) for det in found.faces]
        return covers + [(plate_cover(det), det) for det in found.plates if not det.skipped]

    def emit(self, *, final: bool) -> None:
        while self.window and (final or self.tracker.settled(self.window[0][0])):
            index, frame = self.window.popleft()
            with self.stage("track"):
                boxes = self.tracker.boxes_at(index)
            if boxes:
                with self.stage("blur"):
                    rgb, regions = hide(self.upright(frame), boxes, self.options)
                    if regions:
                        self.blurred += 1
                        frame = self.stored_frame(rgb, frame)
            with self.stage("encode"):
                self.writer.frame(self.timed(frame))
            self.written += 1
        with self.stage("track"):
            self.tracker.finish_before(self.window[0][0] if self.window else self.decoded)

    def upright(self, frame: VideoFrame) -> RGB:
        """The frame as displayed, RGB, at the first frame's size (a stream may change size midway)."""
        if self.size is None:
            self.size = (frame.width, frame.height)
            probe.check_frame_size(frame.width, frame.height, self.settings)
        width, height = self.size
        rgb = np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height), dtype=np.uint8)
        turns = probe.quarter_turns(self.info.rotation)
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb

    def stored_frame(self, rgb: RGB, like: VideoFrame) -> VideoFrame:
        turns = probe.quarter_turns(self.info.rotation)
        stored = np.ascontiguousarray(np.rot90(rgb, -turns)) if turns else rgb
        frame = VideoFrame.from_ndarray(stored, format="rgb24")
        frame.pts, frame.time_base = like.pts, like.time_base
        return frame

    def timed(self, frame: VideoFrame) -> VideoFrame:
        """Timestamps kept; a missing or repeated one gets the next free tick (the encoder needs them
        strictly increasing)."""
        if frame.pts is None or frame.pts <= self.last_pts:
            frame.pts = self.last_pts + 1
        self.last_pts = frame.pts
        return frame

    def result(self) -> VideoResult:
        tracks = self.tracker.all_tracks()
        by_class: dict[str, int] = {}
        for track in tracks:
            by_class[track.label] = by_class.get(track.label, 0) + 1
        return VideoResult(
            info=self.info,
            frames_written=self.written,
            detections=[_reported(track) for track in tracks],
            tracks_by_class=by_class,
            timings_ms={name: round(ms, 1) for name, ms in self.timings.items()},
            frames_detected=self.detected,
            frames_blurred=self.blurred,
        )


def _reported(track: Track) -> TrackedDetection:
    best = track.best().detection
    sources = sorted({source for s in track.sightings for source in s.detection.sources})
    return TrackedDetection(
        label=track.label,
        score=best.score,
        box=best.box,
        first_frame=track.first,
        last_frame=track.last,
        sources=tuple(sources),
        text=best.text,
    )
