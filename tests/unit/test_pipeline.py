"""The Anonymizer with fake detectors: target selection, thresholds, fail-closed behaviour."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import cv2
import numpy as np
import pytest

from shared.errors import DetectionError, ValidationError
from shared.jobs import BlurOptions, ImageFormat, Target
from tests.images import astronaut_bgr
from workers.detection import DetectionConfig
from workers.detectors.base import RawDetection
from workers.imageops import decode
from workers.pipeline import Anonymizer


class FakeDetector:
    def __init__(self, found: list[RawDetection], fail: bool = False) -> None:
        self.found = found
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    def detect(self, image: Any, *args: Any, **kwargs: Any) -> list[RawDetection]:
        self.calls.append((image.shape, *args))
        if self.fail:
            raise RuntimeError("boom")
        return self.found


FACE = RawDetection("face", 0.9, (180.0, 60.0, 270.0, 180.0), None)
PLATE = RawDetection(
    "plate", 0.8, (300.0, 400.0, 400.0, 430.0), ((298, 401), (400, 399), (401, 430), (300, 431))
)


def _png() -> bytes:
    ok, buf = cv2.imencode(".png", astronaut_bgr())
    assert ok
    return bytes(buf.tobytes())


def _anonymizer(face: FakeDetector, plate: FakeDetector) -> Anonymizer:
    return Anonymizer(cast(Any, face), cast(Any, plate))


def test_runs_both_and_blurs_exactly_the_regions() -> None:
    face, plate = FakeDetector([FACE]), FakeDetector([PLATE])
    source = _png()
    result = _anonymizer(face, plate).run(
        source, BlurOptions(padding=0.1), max_pixels=10**8, face_max_side=640
    )
    assert result.format is ImageFormat.PNG
    assert result.content_type == "image/png"
    assert (result.width, result.height) == (512, 512)
    # Each detection records the detector that found it.
    assert result.detections == [
        replace(FACE, sources=("centerface",)),
        replace(PLATE, sources=("platedet",)),
    ]
    # Face: grown towards the head (10 % sides, 5 % top, 15 % bottom), padded; plate: polygon ∪ box, padded.
    assert result.regions == [(160, 39, 290, 213), (287, 395, 412, 435)]
    assert set(result.timings_ms) == {"decode", "detect_faces", "detect_plates", "blur", "encode"}
    before = decode(source, max_pixels=10**8).pixels
    after = decode(result.image, max_pixels=10**8).pixels
    changed = np.any(before != after, axis=2)
    inside = np.zeros_like(changed)
    for x1, y1, x2, y2 in result.regions:
        inside[y1:y2, x1:x2] = True
    assert not changed[~inside].any()
    assert changed[inside].mean() > 0.9
    # Defaults passed through; detectors get RGB.
    defaults = DetectionConfig()
    assert face.calls == [((512, 512, 3), defaults.face_min_score, 640)]
    assert plate.calls == [((512, 512, 3), defaults.plate_min_score)]


def test_only_requested_targets_and_min_score_override() -> None:
    face, plate = FakeDetector([FACE]), FakeDetector([PLATE])
    options = BlurOptions(targets=(Target.PLATES,), min_score=0.6)
    result = _anonymizer(face, plate).run(_png(), options, max_pixels=10**8, face_max_side=640)
    assert face.calls == []
    assert plate.calls == [((512, 512, 3), 0.6)]
    assert result.detections == [replace(PLATE, sources=("platedet",))]
    assert "detect_faces" not in result.timings_ms


@pytest.mark.parametrize("failing", ["face", "plate"])
def test_detector_failure_fails_closed(failing: str) -> None:
    face = FakeDetector([FACE], fail=failing == "face")
    plate = FakeDetector([PLATE], fail=failing == "plate")
    with pytest.raises(DetectionError, match=f"{failing} detection failed"):
        _anonymizer(face, plate).run(_png(), BlurOptions(), max_pixels=10**8, face_max_side=640)


def test_non_finite_detection_fails_closed() -> None:
    bad = RawDetection("face", float("nan"), (0.0, 0.0, 10.0, 10.0), None)
    with pytest.raises(DetectionError):
        _anonymizer(FakeDetector([bad]), FakeDetector([])).run(
            _png(), BlurOptions(), max_pixels=10**8, face_max_side=640
        )


def test_undecodable_input_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        _anonymizer(FakeDetector([]), FakeDetector([])).run(
            b"nope", BlurOptions(), max_pixels=10**8, face_max_side=640
        )
