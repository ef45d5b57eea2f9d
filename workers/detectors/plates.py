"""Licence plates with platedet: a single-class YOLOv8s-seg trained at 640, cut before its box decoding.

The derived models (``workers/models/quantize.py``) end at the head's raw outputs, so any input whose
sides are multiples of 32 works: a photo is resized to a long side of 640 and padded to the next multiple
of 32 (a 16:9 photo runs as 640x384), or letterboxed to 640x640 where every input of a batch must match.

``raw`` is 1 x 65 x anchors: per anchor, 4 x 16 distance-bin logits (left, top, right, bottom; the
distance is the softmax-weighted mean bin, in units of the anchor's stride) and the plate logit. Anchors
are the cells of the stride 8, 16 and 32 grids, row by row, one grid after the other. ``mask_coeffs``
(1 x 32 x anchors) and the prototypes (32 x H/4 x W/4) give a plate's mask: sigmoid(coefficients ·
prototypes), cropped to its box, which yields the plate's (rotated) outline.

The prototypes come from a second, small model run on a window of the body's stride-8 ``features``
around each plate (``workers.models.quantize.split_plate_masks``): a whole prototype map costs about a quarter
of a pass, a window a few milliseconds, and with ``MASK_CONTEXT`` cells of margin its inside is exact.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from workers.detectors.base import FloatArray, Polygon, RawDetection, as_rgb, clip_boxes, nms, round_up
from workers.sessions import Session

DEFAULT_MIN_SCORE = 0.25
NMS_IOU = 0.45
PAD_VALUE = 114  # the grey YOLO letterboxes with during training
INPUT_SIDE = 640  # the training size: the long side of every input
OUTPUTS = ["raw", "mask_coeffs", "features"]  # of the body model
MASKS_INPUT = "features"
STRIDES = (8, 16, 32)
# Feature cells of context around a plate's window: the prototype branch (3x3 conv, 2x up-convolution,
# 3x3 conv at stride 4, 1x1 conv) reads 2 cells of the stride-8 map each side of an output cell.
MASK_CONTEXT = 2
_ALIGN = 32
_BINS = 16


def _sigmoid(x: FloatArray) -> FloatArray:
    # Clipped: float16 logits far below -88 would overflow exp in float32 (the sigmoid is 0 there anyway).
    out: FloatArray = (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)
    return out


@functools.lru_cache(maxsize=32)
def anchor_grid(height: int, width: int) -> tuple[FloatArray, FloatArray]:
    """(anchors x 2 cell centres in input pixels, anchors strides) for an input of ``height`` x ``width``,
    in the order of the head's outputs. Cached per size, so treat the arrays as read-only."""
    centres: list[FloatArray] = []
    strides: list[FloatArray] = []
    for stride in STRIDES:
        rows, cols = np.mgrid[0 : height // stride, 0 : width // stride]
        grid = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1) * stride
        centres.append(grid.astype(np.float32))
        strides.append(np.full(rows.size, stride, dtype=np.float32))
    return np.concatenate(centres), np.concatenate(strides)


def decode(
    raw: FloatArray, height: int, width: int, min_score: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """The head's ``raw`` output (65 x anchors, batch item removed) for an input of ``height`` x ``width``
    -> (N x 4 boxes x1,y1,x2,y2 in input pixels, N scores, N anchor indices) of anchors scoring over
    ``min_score``. Only those anchors go through the distance decoding."""
    centres, strides = anchor_grid(height, width)
    if raw.shape != (4 * _BINS + 1, len(strides)):
        raise ValueError(f"plate head output {raw.shape} does not fit a {height}x{width} input")
    all_scores = _sigmoid(raw[4 * _BINS])
    index = np.nonzero(all_scores > min_score)[0]
    scores = all_scores[index]
    bins = raw[: 4 * _BINS, index].reshape(4, _BINS, -1)
    weights = np.exp(bins - bins.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    distance = (weights * np.arange(_BINS, dtype=np.float32)[None, :, None]).sum(axis=1) * strides[index]
    cx, cy = centres[index, 0], centres[index, 1]
    boxes = np.stack([cx - distance[0], cy - distance[1], cx + distance[2], cy + distance[3]], axis=1)
    return boxes.astype(np.float32).reshape(-1, 4), scores, index


class PlateDetector:
    """Wraps the two sessions of a derived platedet model, body and masks (``workers/models/quantize.py``).

    ``square=True`` letterboxes every photo to 640x640: needed when calls are batched together
    (``workers/batcher.py`` pads inputs to one size, and the anchor list depends on it); otherwise each
    photo runs at its own aspect ratio, which costs less.
    """

    def __init__(self, session: Session, masks_session: Session, *, square: bool = False) -> None:
        self.session = session
        self.masks_session = masks_session
        model_input = session.get_inputs()[0]
        self._input_name: str = model_input.name
        self.square = square
        self._dtype = np.float16 if "float16" in model_input.type else np.float32

    def _letterbox(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[Any], float, int, int]:
        h, w = image.shape[:2]
        ratio = min(INPUT_SIDE / h, INPUT_SIDE / w)
        new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
        if self.square:
            canvas_h = canvas_w = INPUT_SIDE
        else:
            canvas_h, canvas_w = round_up(new_h, _ALIGN), round_up(new_w, _ALIGN)
        interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
        left, top = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
        canvas = np.full((canvas_h, canvas_w, 3), PAD_VALUE, dtype=np.uint8)
        canvas[top : top + new_h, left : left + new_w] = resized
        blob = (canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0).astype(self._dtype)
        return blob, ratio, left, top

    def detect(
        self, image_rgb: npt.NDArray[np.uint8], min_score: float = DEFAULT_MIN_SCORE
    ) -> list[RawDetection]:
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        blob, ratio, left, top = self._letterbox(image)
        canvas_h, canvas_w = blob.shape[2:]
        raw, coeffs, features = self.session.run(OUTPUTS, {self._input_name: blob})
        boxes_lb, scores, index = decode(np.asarray(raw[0], np.float32), canvas_h, canvas_w, min_score)
        if not len(scores):
            return []
        keep = nms(boxes_lb, scores, NMS_IOU)
        boxes_lb, scores, index = boxes_lb[keep], scores[keep], index[keep]
        # Undo the letterbox: letterboxed pixels -> original pixels.
        shift = np.array([left, top, left, top], dtype=np.float32)
        boxes = clip_boxes(((boxes_lb - shift) / ratio).astype(np.float32), w, h)
        mask_coeffs = np.asarray(coeffs[0][:, index], dtype=np.float32).T  # N x 32
        letterbox = _Letterbox(ratio, left, top)
        found: list[RawDetection] = []
        for score, box, box_lb, coefficients in zip(
            scores.tolist(), boxes, boxes_lb, mask_coeffs, strict=True
        ):
            x1, y1, x2, y2 = (float(v) for v in box)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            window = feature_window(box_lb, features.shape[2], features.shape[3])
            polygon = _polygon(
                coefficients, self._prototypes(features, window), window, (x1, y1, x2, y2), letterbox
            )
            if polygon is None:
                polygon = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
            found.append(RawDetection("plate", float(score), (x1, y1, x2, y2), polygon))
        return found

    def _prototypes(self, features: npt.NDArray[Any], window: tuple[int, int, int, int]) -> FloatArray:
        """The mask prototypes (32 x 2h x 2w) of the feature cells in ``window`` (y1, y2, x1, x2)."""
        y1, y2, x1, x2 = window
        crop = np.ascontiguousarray(features[:1, :, y1:y2, x1:x2])
        (protos,) = self.masks_session.run(None, {MASKS_INPUT: crop})
        return np.asarray(protos[0], dtype=np.float32)


def feature_window(box_lb: FloatArray, height: int, width: int) -> tuple[int, int, int, int]:
    """The stride-8 feature cells (y1, y2, x1, x2) whose prototypes cover a letterboxed box with one
    prototype cell of margin, plus ``MASK_CONTEXT`` cells each side, clipped to the map."""
    stride = STRIDES[0]
    x1, y1, x2, y2 = (float(v) for v in box_lb)
    return (
        max(0, math.floor(y1 / stride) - 1 - MASK_CONTEXT),
        min(height, math.ceil(y2 / stride) + 1 + MASK_CONTEXT),
        max(0, math.floor(x1 / stride) - 1 - MASK_CONTEXT),
        min(width, math.ceil(x2 / stride) + 1 + MASK_CONTEXT),
    )


@dataclass(frozen=True)
class _Letterbox:
    """Where the photo sits in the model input: scale and offsets."""

    ratio: float
    left: int
    top: int


def _polygon(
    coeffs: FloatArray,
    proto: FloatArray,
    window: tuple[int, int, int, int],
    box: tuple[float, float, float, float],
    lb: _Letterbox,
) -> Polygon | None:
    """The plate's outline as 4 corners in original pixels, from its mask; None if the mask is empty.

    ``proto`` holds the prototypes of the feature cells in ``window`` (see :func:`feature_window`)."""
    channels = proto.shape[0]
    down = STRIDES[0] // 2  # 4: the prototypes have stride 4
    oy, ox = window[0] * 2, window[2] * 2  # the window's first prototype cell in the whole map
    ph, pw = oy + proto.shape[1], ox + proto.shape[2]
    ratio, left, top = lb.ratio, lb.left, lb.top
    x1, y1, x2, y2 = box
    # The box in prototype cells, one cell of margin so the upsampled edge is not cut off.
    bx1, by1 = (x1 * ratio + left) / down, (y1 * ratio + top) / down
    bx2, by2 = (x2 * ratio + left) / down, (y2 * ratio + top) / down
    cx1, cy1 = max(ox, math.floor(bx1) - 1), max(oy, math.floor(by1) - 1)
    cx2, cy2 = min(pw, math.ceil(bx2) + 1), min(ph, math.ceil(by2) + 1)
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    crop = proto[:, cy1 - oy : cy2 - oy, cx1 - ox : cx2 - ox].reshape(channels, -1)
    logits: FloatArray = np.asarray(coeffs @ crop, dtype=np.float32).reshape(cy2 - cy1, cx2 - cx1)
    # Upsample the crop to its size in original pixels (at least 4x so small plates get an outline).
    scale_x = scale_y = max(4.0, down / ratio)
    out_w = max(2, round((cx2 - cx1) * scale_x))
    out_h = max(2, round((cy2 - cy1) * scale_y))
    upsampled = np.asarray(cv2.resize(logits, (out_w, out_h), interpolation=cv2.INTER_LINEAR), np.float32)
    mask = _sigmoid(upsampled) > 0.5
    # Crop to the box, as YOLO does: the mask outside the box belongs to nothing.
    to_mask_x, to_mask_y = out_w / (cx2 - cx1), out_h / (cy2 - cy1)
    mx1 = max(0, round((bx1 - cx1) * to_mask_x))
    my1 = max(0, round((by1 - cy1) * to_mask_y))
    mx2 = min(out_w, round((bx2 - cx1) * to_mask_x))
    my2 = min(out_h, round((by2 - cy1) * to_mask_y))
    inside = np.zeros_like(mask)
    inside[my1:my2, mx1:mx2] = True
    mask_u8 = (mask & inside).astype(np.uint8)
    contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    if cv2.contourArea(largest) < 1:
        return None
    corners = cv2.boxPoints(cv2.minAreaRect(largest))  # 4 x 2, mask pixels
    # Mask pixels -> prototype cells -> letterboxed pixels -> original pixels, clipped to the box.
    px = ((corners[:, 0] / to_mask_x + cx1) * down - left) / ratio
    py = ((corners[:, 1] / to_mask_y + cy1) * down - top) / ratio
    px = np.clip(px, x1, x2)
    py = np.clip(py, y1, y2)
    return tuple((float(a), float(b)) for a, b in zip(px, py, strict=True))
