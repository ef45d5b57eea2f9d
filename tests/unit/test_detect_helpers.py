"""Decoding of the detectors' raw outputs, on hand-made tensors (no models needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.detectors.faces import FaceDetector, decode
from workers.detectors.plates import PlateDetector


def test_centerface_decode_one_peak() -> None:
    heat = np.zeros((1, 1, 8, 10), np.float32)
    scale = np.zeros((1, 2, 8, 10), np.float32)
    offset = np.zeros((1, 2, 8, 10), np.float32)
    heat[0, 0, 3, 5] = 0.9
    scale[0, :, 3, 5] = [np.log(20 / 4), np.log(10 / 4)]  # height 20 px, width 10 px
    offset[0, :, 3, 5] = [0.25, 0.5]  # y, x in cells
    boxes, scores = decode(heat, scale, offset, 0.5)
    assert scores.tolist() == pytest.approx([0.9])
    cx, cy = (5 + 0.5 + 0.5) * 4, (3 + 0.25 + 0.5) * 4
    assert boxes[0].tolist() == pytest.approx([cx - 5, cy - 10, cx + 5, cy + 10])


class _FakeFaceSession:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, names: list[str], feeds: dict[str, Any]) -> list[Any]:
        blob = feeds["input.1"]
        self.shapes.append(blob.shape)
        h, w = blob.shape[2] // 4, blob.shape[3] // 4
        heat = np.zeros((1, 1, h, w), np.float32)
        heat[0, 0, 2, 2] = 0.8  # a 40x40 face centred at (10, 10) in input pixels
        scale = np.full((1, 2, h, w), np.log(10.0), np.float32)
        return [heat, scale, np.zeros((1, 2, h, w), np.float32), np.zeros((1, 10, h, w), np.float32)]


def test_face_detector_scales_back_and_pads_to_32() -> None:
    session = _FakeFaceSession()
    image = np.zeros((500, 1000, 3), np.uint8)
    (det,) = FaceDetector(session).detect(image, 0.5, max_side=500)  # downscale by 2: 250 x 500
    assert session.shapes == [(1, 3, 256, 512)]
    assert det.label == "face"
    assert det.box == pytest.approx((0.0, 0.0, 60.0, 60.0))  # (10 ± 20) * 2, clipped at 0


class _Input:
    name = "images"
    shape = (1, 3, 640, 640)
    type = "tensor(float16)"


class _FakePlateSession:
    def __init__(self, out0: Any, out1: Any) -> None:
        self.out = [out0, out1]
        self.feeds: list[Any] = []

    def get_inputs(self) -> list[_Input]:
        return [_Input()]

    def run(self, names: Any, feeds: dict[str, Any]) -> list[Any]:
        self.feeds.append(feeds["images"])
        return self.out


def _plate_outputs(mask_on: bool) -> tuple[Any, Any]:
    out0 = np.zeros((1, 37, 8400), np.float32)
    # Two overlapping candidates for one plate at cx=320, cy=400 (letterboxed), 160 x 48, and a weak one.
    out0[0, :5, 0] = [320, 400, 160, 48, 0.9]
    out0[0, :5, 1] = [322, 401, 160, 48, 0.7]
    out0[0, :5, 2] = [100, 100, 50, 20, 0.1]
    protos = np.full((1, 32, 160, 160), -1.0, np.float32)
    if mask_on:
        protos[0, 0, 94:106, 60:100] = 1.0  # the plate's cells: y 376..424, x 240..400 in letterboxed px
    out0[0, 5, :2] = 10.0  # coefficient 0
    return out0.astype(np.float16), protos.astype(np.float16)


@pytest.mark.parametrize("mask_on", [True, False])
def test_plate_detector_decodes_and_undoes_letterbox(mask_on: bool) -> None:
    session = _FakePlateSession(*_plate_outputs(mask_on))
    image = np.zeros((960, 1280, 3), np.uint8)  # ratio 0.5, padded 80 px top and bottom
    (det,) = PlateDetector(session).detect(image, 0.25)
    blob = session.feeds[0]
    assert blob.dtype == np.float16
    assert blob.shape == (1, 3, 640, 640)
    assert float(blob[0, 0, 0, 0]) == pytest.approx(114 / 255, abs=1e-3)  # letterbox padding
    assert det.score == pytest.approx(0.9, abs=1e-3)
    assert det.box == pytest.approx((480, 592, 800, 688))
    assert det.polygon is not None
    assert len(det.polygon) == 4
    xs = [p[0] for p in det.polygon]
    ys = [p[1] for p in det.polygon]
    assert min(xs) >= 480 - 1e-3
    assert max(xs) <= 800 + 1e-3
    assert min(ys) >= 592 - 1e-3
    assert max(ys) <= 688 + 1e-3
    assert max(xs) - min(xs) > 200  # the mask spans most of the box


def test_plate_detector_nothing_above_threshold() -> None:
    session = _FakePlateSession(*_plate_outputs(True))
    assert PlateDetector(session).detect(np.zeros((100, 100, 3), np.uint8), 0.95) == []
