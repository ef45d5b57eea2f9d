"""The second sources with their real, pinned models: RetinaFace beside CenterFace, plates from PP-OCR text.

Images are built here (scikit-image's astronaut, text rendered with OpenCV); nothing reads the eval set.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tests.images import astronaut_rgb
from workers.detectors.base import BoxF
from workers.detectors.plate_text import TextPlateDetector, TextRecognizer
from workers.detectors.retinaface import RetinaFaceDetector
from workers.detectors.text import TextDetector
from workers.models.fetch import (
    RETINAFACE,
    TEXT_DET,
    TEXT_REC,
    TextModels,
    ensure_retinaface,
    ensure_text_models,
    sha256_file,
)
from workers.sessions import CPU, create_session

from .conftest import MODEL_DIR

pytestmark = pytest.mark.models

ASTRONAUT_FACE = (180, 58, 270, 178)  # checked by eye (as in test_detectors.py)


def iou(a: BoxF | tuple[int, int, int, int], b: BoxF | tuple[int, int, int, int]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def retina() -> RetinaFaceDetector:
    path = ensure_retinaface(MODEL_DIR)
    assert sha256_file(path) == RETINAFACE.sha256
    return RetinaFaceDetector(create_session(path, [CPU], intra_op_threads=0, model_dir=MODEL_DIR))


@pytest.fixture(scope="module")
def text_models() -> TextModels:
    models = ensure_text_models(MODEL_DIR)
    assert sha256_file(models.det) == TEXT_DET.sha256
    assert sha256_file(models.rec) == TEXT_REC.sha256
    return models


@pytest.fixture(scope="module")
def text_plates(text_models: TextModels) -> TextPlateDetector:
    det = create_session(text_models.det, [CPU], intra_op_threads=0, model_dir=MODEL_DIR)
    rec = create_session(text_models.rec, [CPU], intra_op_threads=0, model_dir=MODEL_DIR)
    return TextPlateDetector(TextDetector(det), TextRecognizer(rec))


def car_with_text(text: str, zoom: int = 1) -> tuple[npt.NDArray[np.uint8], BoxF]:
    """A 1280x720 grey street (times ``zoom``), a dark car with a window, and a 200x50 white plate (times
    ``zoom``) with ``text`` in black: RGB, and the plate's box (x2/y2 exclusive)."""
    width, height = 1280 * zoom, 720 * zoom
    image = np.full((height, width, 3), 120, np.uint8)
    cv2.rectangle(image, (width // 4, height // 3), (3 * width // 4, 6 * height // 7), (60, 60, 64), -1)
    cv2.rectangle(
        image, (width // 4 + 40, height // 3 + 40), (3 * width // 4 - 40, height // 2), (150,) * 3, -1
    )
    x1, y1 = width // 2 - 100 * zoom, int(height * 0.65)
    x2, y2 = x1 + 200 * zoom, y1 + 50 * zoom
    cv2.rectangle(image, (x1, y1), (x2, y2), (255, 255, 255), -1)
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 0), 2 * zoom)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = cv2.getFontScaleFromHeight(font, 28 * zoom, 3 * zoom)
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3 * zoom)
    origin = ((x1 + x2 - tw) // 2, (y1 + y2 + th) // 2)
    cv2.putText(image, text, origin, font, scale, (0, 0, 0), 3 * zoom, cv2.LINE_AA)
    return image, (float(x1), float(y1), float(x2 + 1), float(y2 + 1))


def test_retinaface_finds_the_astronaut(retina: RetinaFaceDetector) -> None:
    (face,) = retina.detect(astronaut_rgb(), 0.5)
    assert face.label == "face"
    assert face.score > 0.9
    assert iou(face.box, ASTRONAUT_FACE) > 0.7
    # Zoomed 2x (as small photos are) the box maps back to the same place.
    (zoomed,) = retina.detect(astronaut_rgb(), 0.5, upscale=2.0)
    assert iou(zoomed.box, face.box) > 0.85


def test_retinaface_downscaled_and_odd_sized_inputs(retina: RetinaFaceDetector) -> None:
    big = np.asarray(cv2.resize(astronaut_rgb(), (1536, 1536)), np.uint8)
    (face,) = retina.detect(big, 0.5, 640)  # seen at 640: boxes must scale back
    x1, y1, x2, y2 = ASTRONAUT_FACE
    assert iou(face.box, (x1 * 3, y1 * 3, x2 * 3, y2 * 3)) > 0.7
    crop = np.ascontiguousarray(astronaut_rgb()[3:430, 17:490])  # 473 x 427: padded to 480 x 448
    (inside,) = retina.detect(crop, 0.5)
    assert iou(inside.box, (x1 - 17, y1 - 3, x2 - 17, y2 - 3)) > 0.7


def test_retinaface_finds_nothing_on_flat_grey(retina: RetinaFaceDetector) -> None:
    assert retina.detect(np.full((480, 640, 3), 128, np.uint8), 0.5) == []


@pytest.mark.parametrize("text", ["AB 123 CD", "BRA2E19", "7ABC123"])
def test_text_source_finds_and_reads_a_plate(text_plates: TextPlateDetector, text: str) -> None:
    image, truth = car_with_text(text)
    (plate,) = text_plates.detect(image)
    assert plate.label == "plate"
    assert plate.score > 0.6
    assert iou(plate.box, truth) > 0.5
    # The box is the text line grown to the plate: it covers the plate's characters and most of it.
    assert plate.text is not None
    assert plate.text.replace(" ", "") == text.replace(" ", "")
    assert plate.text_score is not None
    assert plate.text_score > 0.8
    assert plate.polygon is not None
    assert len(plate.polygon) == 4


def test_text_source_leaves_known_plates_alone(text_plates: TextPlateDetector) -> None:
    image, truth = car_with_text("AB 123 CD")
    assert text_plates.detect(image, known=[truth]) == []


def test_text_source_skips_text_that_is_not_plate_like(text_plates: TextPlateDetector) -> None:
    """A timestamp is plate-shaped text; only reading it tells it apart."""
    image, truth = car_with_text("12:45:07")
    (unread,) = text_plates.detect(image, read=False)
    assert unread.text is None
    assert iou(unread.box, truth) > 0.4
    assert text_plates.detect(image) == []


def test_text_source_finds_no_plate_on_the_astronaut_or_flat_grey(text_plates: TextPlateDetector) -> None:
    assert text_plates.detect(astronaut_rgb()) == []
    assert text_plates.detect(np.full((480, 640, 3), 128, np.uint8), read=False) == []


def test_text_detector_bounds_its_input(text_models: TextModels) -> None:
    detector = TextDetector(
        create_session(text_models.det, [CPU], intra_op_threads=0, model_dir=MODEL_DIR), max_side=640
    )
    image, truth = car_with_text("AB 123 CD", zoom=2)  # 2560 x 1440, seen at 640 x 352
    prob, fx, fy = detector.probability(image)
    assert max(prob.shape) == 640
    assert (fx, fy) == pytest.approx((4.0, 4.0), rel=0.03)
    assert any(iou(region.box, truth) > 0.3 for region in detector.detect(image))
