"""A detection deadline stops the pipeline between model passes: a timed-out job frees its lane within one
pass instead of running every remaining pass for nothing. The deadline is a callable (``expired``), so
these tests move the clock by model passes, not by sleeping."""

from __future__ import annotations

from typing import Any, cast

import cv2
import numpy as np
import pytest

from shared.errors import DetectionTimeoutError
from shared.jobs import BlurOptions
from tests.images import astronaut_bgr
from workers.detectors.base import RawDetection
from workers.pipeline import Anonymizer


class CountingDetector:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: Any, *args: Any, **kwargs: Any) -> list[RawDetection]:
        self.calls += 1
        return []


def _png(tiles: int = 1) -> bytes:
    ok, buf = cv2.imencode(".png", np.tile(astronaut_bgr(), (tiles, tiles, 1)))
    assert ok
    return bytes(buf.tobytes())


def test_a_passed_deadline_runs_no_model_pass() -> None:
    face, plate = CountingDetector(), CountingDetector()
    anonymizer = Anonymizer(cast(Any, face), cast(Any, plate))
    with pytest.raises(DetectionTimeoutError):
        anonymizer.run(_png(), BlurOptions(), max_pixels=10**8, face_max_side=640, expired=lambda: True)
    assert (face.calls, plate.calls) == (0, 0)


def test_a_deadline_passing_during_a_pass_stops_before_the_next_tile() -> None:
    # 2048 px with 640 px faces: one whole-image pass and a grid of tiles, each its own model pass.
    face, plate = CountingDetector(), CountingDetector()
    anonymizer = Anonymizer(cast(Any, face), cast(Any, plate))
    with pytest.raises(DetectionTimeoutError):
        anonymizer.run(
            _png(tiles=4),
            BlurOptions(),
            max_pixels=10**8,
            face_max_side=640,
            expired=lambda: face.calls >= 1,  # time is up once the first face pass ran
        )
    assert face.calls == 1  # no tile after the pass the deadline passed in
    assert plate.calls == 0


def test_plate_tiles_are_checked_too() -> None:
    face, plate = CountingDetector(), CountingDetector()
    with pytest.raises(DetectionTimeoutError):
        Anonymizer(cast(Any, face), cast(Any, plate)).run(
            _png(tiles=4),
            BlurOptions(),
            max_pixels=10**8,
            face_max_side=640,
            expired=lambda: plate.calls >= 2,
        )
    assert plate.calls == 2


def test_a_deadline_still_ahead_changes_nothing() -> None:
    face, plate = CountingDetector(), CountingDetector()
    result = Anonymizer(cast(Any, face), cast(Any, plate)).run(
        _png(), BlurOptions(), max_pixels=10**8, face_max_side=640, expired=lambda: False
    )
    assert (result.width, result.height) == (512, 512)
    assert (face.calls, plate.calls) == (1, 1)
