"""Running the detectors of one image: the thresholds and extra passes (:class:`DetectionConfig`), the
boxes that cover a whole plate or head, the per-pass deadline check, and one detector call that fails closed
(a detector that raises or returns non-finite values fails the job). Pure: arrays in, detections out."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from shared.errors import DetectionError, DetectionTimeoutError
from shared.settings import WorkerSettings
from workers import tiling
from workers.detectors import faces as faces_mod
from workers.detectors.base import BoxF, RawDetection

log = logging.getLogger("workers.pipeline")

# Whether the job's detection time is up (None: no limit). Called between model passes, so a job past its
# deadline gives its lane back within one pass; it reads the caller's clock, the pipeline keeps none.
Expired = Callable[[], bool]


@dataclass(frozen=True)
class DetectionConfig:
    """How hard to look: default thresholds and the extra passes for small objects (each costs time).

    Built from :class:`shared.settings.WorkerSettings` by :meth:`from_settings`; see docs/accuracy.md for the
    measured recall and cost of each knob.
    """

    face_min_score: float = faces_mod.DEFAULT_MIN_SCORE
    plate_min_score: float = 0.3  # from the curve in docs/accuracy.md
    # Small photos are run at up to this zoom (long side capped at face_max_side): small faces appear.
    face_upscale: float = 2.0
    # Photos larger than face_max_side are also run as overlapping tiles at native resolution.
    face_tiles: bool = True
    # Photos larger than plate_tile_side are also run as overlapping tiles of that side (native pixels,
    # resized to the model's 640 input), so small plates are not shrunk away.
    plate_tiles: bool = True
    plate_tile_side: int = 1280
    tile_overlap: float = 0.2  # ratio of the tile side
    # Face boxes grow by this (see head_cover) before the request's padding, so the head is covered.
    face_head_margin: float = 0.1
    # Second sources (used when the Anonymizer has them). Their thresholds are floors: a request's
    # min_score can raise them, never lower them.
    retinaface_min_score: float = 0.75  # beside YuNet (0.7 alone; docs/accuracy.md)
    retinaface_upscale: float = 2.0
    yunet_min_score: float = 0.7
    yunet_upscale: float = 3.0
    # Plates from text: on (every pass), fallback (only passes where platedet found none), off.
    plate_text: Literal["on", "fallback", "off"] = "on"
    plate_text_min_score: float = 0.6
    # Also read the text on platedet's plates (their text is reported, and skip_regexp can match it).
    plate_text_read_known: bool = True

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> DetectionConfig:
        return cls(
            face_min_score=settings.face_min_score,
            plate_min_score=settings.plate_min_score,
            face_upscale=settings.face_upscale,
            face_tiles=settings.face_tiles,
            plate_tiles=settings.plate_tiles,
            plate_tile_side=settings.plate_tile_side,
            tile_overlap=settings.tile_overlap,
            face_head_margin=settings.face_head_margin,
            retinaface_min_score=settings.face_retinaface_min_score,
            retinaface_upscale=settings.face_retinaface_upscale,
            yunet_min_score=settings.face_yunet_min_score,
            yunet_upscale=settings.face_yunet_upscale,
            plate_text=settings.plate_text,
            plate_text_min_score=settings.plate_text_min_score,
        )


# Where AnonymizeResult.timings_ms keeps one source's time (part of its class's detect_* stage).
SOURCE_TIMING = "source."


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round((time.perf_counter() - start) * 1000, 2)


@contextmanager
def added(timings: dict[str, float] | None, source: str) -> Iterator[None]:
    """Adds the block's time to ``timings["source.<source>"]`` (a source runs once per pass)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            key = SOURCE_TIMING + source
            timings[key] = round(timings.get(key, 0.0) + (time.perf_counter() - start) * 1000, 2)


def plate_cover(detection: RawDetection) -> BoxF:
    """The box unioned with the mask polygon's bounding rect, so the whole plate is covered."""
    x1, y1, x2, y2 = detection.box
    if detection.polygon:
        xs = [p[0] for p in detection.polygon]
        ys = [p[1] for p in detection.polygon]
        x1, y1, x2, y2 = min(x1, *xs), min(y1, *ys), max(x2, *xs), max(y2, *ys)
    return (x1, y1, x2, y2)


def head_cover(box: BoxF, margin: float) -> BoxF:
    """CenterFace boxes hug the face; grow them towards the whole head (chin, cheeks, ears) before padding:
    ``margin`` of the box's size on the left and right, half of it on top, one and a half times at the bottom.
    The proportions come from where labelled head boxes lie around detected face boxes (docs/accuracy.md)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return (x1 - margin * w, y1 - 0.5 * margin * h, x2 + margin * w, y2 + 1.5 * margin * h)


def sane(detections: list[RawDetection]) -> bool:
    for det in detections:
        values = [det.score, *det.box]
        if det.polygon:
            values.extend(v for point in det.polygon for v in point)
        if not all(math.isfinite(v) for v in values):
            return False
    return True


def deadline_check(expired: Expired | None) -> Callable[[], None]:
    def check() -> None:
        if expired is not None and expired():
            raise DetectionTimeoutError("detection took longer than its time limit")

    return check


def checked_each(check: Callable[[], None], detect: tiling.Detect) -> tiling.Detect:
    """``detect`` with the deadline checked before each call (each tile is a model pass of its own)."""

    def checked(crop: npt.NDArray[np.uint8]) -> list[RawDetection]:
        check()
        return detect(crop)

    return checked


def run_detector(what: str, call: Callable[[], list[RawDetection]]) -> list[RawDetection]:
    try:
        found = call()
    except DetectionTimeoutError:
        raise  # out of time: not a detector failure
    except Exception as exc:
        log.exception("%s detection failed", what)
        raise DetectionError(f"{what} detection failed: {exc}") from exc
    if not sane(found):
        raise DetectionError(f"{what} detector returned non-finite values")
    return found
