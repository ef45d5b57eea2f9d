"""Detection on one decoded frame: the photo pipeline's detectors on an RGB array, without the decode.

:class:`FrameDetector` is what the video pipeline needs; :func:`frame_detector` gets one from what the
worker holds (:class:`workers.engine.Engine`, whose lane it borrows for the whole video, or a bare
:class:`workers.pipeline.Anonymizer`). The passes and thresholds are exactly a photo's
(:meth:`Anonymizer.detect_faces` / :meth:`Anonymizer.detect_plates`), failing closed the same way
(:func:`workers.detection.run_detector`); a photo's ``exclusion`` and ``skip_regexp`` apply, ``split``
(panoramas) does not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from shared.jobs import BlurOptions, Target
from workers import overlays
from workers.detection import Expired, run_detector
from workers.detectors.base import RawDetection
from workers.detectors.fusion import skip_matching
from workers.engine import Engine
from workers.pipeline import Anonymizer

RGB = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FrameFound:
    faces: list[RawDetection]
    plates: list[RawDetection]  # skipped ones (skip_regexp) marked, not removed


class FrameDetector(Protocol):
    @property
    def face_head_margin(self) -> float: ...

    @property
    def frames_at_once(self) -> int:
        """How many frames :meth:`detect_frame` may be called with at once, from as many threads."""
        ...

    def detect_frame(
        self,
        rgb: RGB,
        options: BlurOptions,
        *,
        face_max_side: int,
        expired: Expired | None,
        timings: dict[str, float],
    ) -> FrameFound: ...


class AnonymizerFrames:
    """:class:`FrameDetector` over one anonymizer (used by one thread at a time, as it asks).

    With a ``pool``, a frame's plates are searched on the pool's thread while its faces are searched on
    the caller's: the two classes share no detector or state, and a video's frames come one after the
    other, so this is what lets one video use two cores (a photo job's lane uses one). The call returns
    only once both are done, so the anonymizer is never in use after it."""

    def __init__(self, anonymizer: Anonymizer, pool: Executor | None = None, frames_at_once: int = 1) -> None:
        self.anonymizer = anonymizer
        self.pool = pool
        self.frames_at_once = frames_at_once

    def detect_frame(
        self,
        rgb: RGB,
        options: BlurOptions,
        *,
        face_max_side: int,
        expired: Expired | None,
        timings: dict[str, float],
    ) -> FrameFound:
        """Adds each class's time to ``timings["detect_faces"]`` / ``["detect_plates"]``."""
        a = self.anonymizer
        height, width = rgb.shape[:2]

        def faces() -> list[RawDetection]:
            if Target.FACES not in options.targets:
                return []
            score = options.min_score if options.min_score is not None else a.config.face_min_score
            side = options.face_max_side or face_max_side
            found = _timed(timings, "detect_faces", lambda: a.detect_faces(rgb, score, side, expired))
            return overlays.exclusion_filter(found, options.exclusion, width, height)

        def plates() -> list[RawDetection]:
            if Target.PLATES not in options.targets:
                return []
            score = options.min_score if options.min_score is not None else a.config.plate_min_score
            found = _timed(timings, "detect_plates", lambda: a.detect_plates(rgb, score, expired))
            found = overlays.exclusion_filter(found, options.exclusion, width, height)
            return skip_matching(found, options.skip_patterns())

        if self.pool is None or len(options.targets) < 2:
            return FrameFound(faces=faces(), plates=plates())
        pending = self.pool.submit(plates)
        try:
            found_faces = faces()
        finally:
            wait([pending])  # never leave the plate search running past this call, even on an error
        return FrameFound(faces=found_faces, plates=pending.result())

    @property
    def face_head_margin(self) -> float:
        return self.anonymizer.config.face_head_margin


def _timed(timings: dict[str, float], key: str, call: Callable[[], list[RawDetection]]) -> list[RawDetection]:
    """``call`` through :func:`run_detector` (fails closed), its time added to ``timings[key]`` (ms)."""
    start = time.perf_counter()
    try:
        return run_detector(key.removeprefix("detect_").rstrip("s"), call)
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - start) * 1000


@contextlib.contextmanager
def frame_detector(engine: object) -> Iterator[FrameDetector]:
    """A :class:`FrameDetector` from the worker's runner, held for as long as the ``with`` block lasts.

    A runner that already is one (tests, other engines) is used as it is. With an engine that batches
    model passes (a GPU: ``plan.max_batch`` > 1), that many frames are searched at once, so the batcher
    gets a video's frames together; the detectors keep no state between calls, and each session is safe
    to call from several threads (onnxruntime's are; the OpenVINO one keeps a request per thread)."""
    if isinstance(engine, Engine | Anonymizer):
        at_once = engine.plan.max_batch if isinstance(engine, Engine) else 1
        with ThreadPoolExecutor(at_once, thread_name_prefix="video-plates") as pool:
            if isinstance(engine, Anonymizer):
                yield AnonymizerFrames(engine, pool)
                return
            # One lane's anonymizer for the whole video: the job already holds that lane (workers.lanes).
            with engine.borrowed() as anonymizer:
                yield AnonymizerFrames(anonymizer, pool, at_once)
    elif hasattr(engine, "detect_frame"):
        yield engine  # type: ignore[misc]
    else:
        raise TypeError(f"{type(engine).__name__} cannot detect on video frames")
