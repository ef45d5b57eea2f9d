"""Decoding of the detectors' raw outputs, on hand-made tensors (no models needed)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from workers.detectors.faces import FaceDetector, decode
from workers.detectors.plates import PlateDetector, anchor_grid
from workers.detectors.plates import decode as plate_decode


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

    def get_inputs(self) -> list[Any]:
        return []

    def run(self, names: list[str] | None, feeds: dict[str, Any]) -> list[Any]:
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


def test_face_detector_pads_to_a_coarser_multiple_where_asked() -> None:
    """Runtimes that compile per input size get few sizes; the boxes are the same."""
    image = np.zeros((500, 1000, 3), np.uint8)
    fine, coarse = _FakeFaceSession(), _FakeFaceSession()
    (at_32,) = FaceDetector(fine).detect(image, 0.5, max_side=600)  # 300 x 600
    (at_128,) = FaceDetector(coarse, input_multiple=128).detect(image, 0.5, max_side=600)
    assert fine.shapes == [(1, 3, 320, 608)]
    assert coarse.shapes == [(1, 3, 384, 640)]
    assert at_128.box == pytest.approx(at_32.box)
    with pytest.raises(ValueError, match="multiple of 32"):
        FaceDetector(fine, input_multiple=48)


class _Input:
    name = "images"
    shape = ("batch", 3, "height", "width")
    type = "tensor(float16)"


class _FakePlateSession:
    """Answers like a derived platedet model: one plate at a stride-8 anchor (plus a weaker copy of it
    next door and a candidate below any threshold), sized for whatever input it is given."""

    def __init__(self, mask_on: bool) -> None:
        self.mask_on = mask_on
        self.feeds: list[Any] = []
        self.names: list[Any] = []

    def get_inputs(self) -> list[_Input]:
        return [_Input()]

    def run(self, names: Any, feeds: dict[str, Any]) -> list[Any]:
        blob = feeds["images"]
        self.feeds.append(blob)
        self.names.append(names)
        height, width = blob.shape[2:]
        anchors = sum((height // s) * (width // s) for s in (8, 16, 32))
        raw = np.full((1, 65, anchors), -20.0, np.float32)
        cols = width // 8
        plate = 50 * cols + 40  # stride-8 cell at row 50, column 40: centre (324, 404)

        def box(index: int, left: int, top: int, right: int, bottom: int, logit: float) -> None:
            raw[0, :64, index] = 0.0
            for side, bins in enumerate((left, top, right, bottom)):
                raw[0, side * 16 + bins, index] = 30.0  # softmax of the 16 bins ~ one-hot
            raw[0, 64, index] = logit

        box(plate, 10, 3, 10, 3, float(np.log(0.9 / 0.1)))  # 160 x 48 px: 80 / 24 px each side
        box(plate + 1, 10, 3, 10, 3, float(np.log(0.7 / 0.3)))
        box(0, 2, 2, 2, 2, float(np.log(0.1 / 0.9)))
        coeffs = np.zeros((1, 32, anchors), np.float32)
        coeffs[0, 0, [plate, plate + 1]] = 10.0
        # Features that say where they are: channel 0 the stride-8 row, channel 1 the column.
        features = np.zeros((1, 128, height // 8, width // 8), np.float32)
        features[0, 0] = np.arange(height // 8)[:, None]
        features[0, 1] = np.arange(width // 8)[None, :]
        return [raw.astype(np.float16), coeffs.astype(np.float16), features.astype(np.float16)]


class _FakeMaskSession:
    """Prototypes for a window of the features: channel 0 is 1 over the plate (rows 380-428, columns
    244-404 of the input, in stride-4 cells) when ``mask_on``."""

    def __init__(self, mask_on: bool) -> None:
        self.mask_on = mask_on
        self.windows: list[tuple[int, ...]] = []

    def get_inputs(self) -> list[Any]:
        return []

    def run(self, names: Any, feeds: dict[str, Any]) -> list[Any]:
        features = feeds["features"].astype(np.float32)
        self.windows.append(features.shape)
        rows = np.repeat(features[0, 0], 2, axis=0).repeat(2, axis=1) * 2  # stride-4 row of each cell
        rows += np.tile([0, 1], features.shape[2])[:, None]
        cols = np.repeat(features[0, 1], 2, axis=0).repeat(2, axis=1) * 2
        cols += np.tile([0, 1], features.shape[3])[None, :]
        protos = np.full((1, 32, *rows.shape), -1.0, np.float32)
        top = 404 - 24
        if self.mask_on:
            inside = (rows >= top // 4) & (rows < (top + 48) // 4) & (cols >= 244 // 4) & (cols < 404 // 4)
            protos[0, 0][inside] = 1.0
        return [protos.astype(np.float16)]


def _plate_detector(mask_on: bool = True, square: bool = False) -> tuple[PlateDetector, _FakePlateSession]:
    session = _FakePlateSession(mask_on)
    return PlateDetector(session, _FakeMaskSession(mask_on), square=square), session


@pytest.mark.parametrize("mask_on", [True, False])
def test_plate_detector_decodes_and_undoes_the_resize(mask_on: bool) -> None:
    detector, session = _plate_detector(mask_on)
    image = np.zeros((900, 1280, 3), np.uint8)  # ratio 0.5: 640 x 450, padded to 640 x 480, 15 px on top
    (det,) = detector.detect(image, 0.25)
    blob = session.feeds[0]
    assert session.names[0] == ["raw", "mask_coeffs", "features"]
    # The mask model ran once, on a window around the plate, not on the whole 60 x 80 feature map.
    assert cast(_FakeMaskSession, detector.masks_session).windows == [(1, 128, 13, 27)]
    assert blob.dtype == np.float16
    assert blob.shape == (1, 3, 480, 640)  # its own aspect ratio, sides rounded up to 32
    assert float(blob[0, 0, 0, 0]) == pytest.approx(114 / 255, abs=1e-3)  # padding
    assert det.score == pytest.approx(0.9, abs=1e-3)
    # (324 -+ 80, 404 -+ 24) in the input; minus the 15 px of padding on top; divided by 0.5.
    assert det.box == pytest.approx((488, 730, 808, 826), abs=0.1)
    assert det.polygon is not None
    assert len(det.polygon) == 4
    xs = [p[0] for p in det.polygon]
    ys = [p[1] for p in det.polygon]
    assert min(xs) >= 488 - 1e-3
    assert max(xs) <= 808 + 1e-3
    assert min(ys) >= 730 - 1e-3
    assert max(ys) <= 826 + 1e-3
    assert max(xs) - min(xs) > 200  # the mask spans most of the box


def test_plate_detector_square_letterbox_for_batches() -> None:
    detector, session = _plate_detector(square=True)
    image = np.zeros((900, 1280, 3), np.uint8)  # 640 x 450 in a 640 x 640 square: 95 px on top
    (det,) = detector.detect(image, 0.25)
    assert session.feeds[0].shape == (1, 3, 640, 640)
    assert det.box == pytest.approx((488, 570, 808, 666), abs=0.1)


def test_plate_detector_nothing_above_threshold() -> None:
    detector, _ = _plate_detector()
    assert detector.detect(np.zeros((100, 100, 3), np.uint8), 0.95) == []
    assert cast(_FakeMaskSession, detector.masks_session).windows == []


def test_plate_anchor_grid_and_a_wrong_sized_output() -> None:
    centres, strides = anchor_grid(384, 640)
    assert len(centres) == 48 * 80 + 24 * 40 + 12 * 20
    assert centres[0].tolist() == [4.0, 4.0] and strides[0] == 8
    assert centres[-1].tolist() == [624.0, 368.0] and strides[-1] == 32
    with pytest.raises(ValueError, match="does not fit"):
        plate_decode(np.zeros((65, 8400), np.float32), 384, 640, 0.25)
