"""Licence plates with platedet: a single-class YOLOv8s-seg at 640x640, float16 input.

``output0`` is 1 x 37 x 8400: per anchor cx, cy, w, h (letterboxed input pixels), the plate score
(already a sigmoid), then 32 mask coefficients. ``output1`` is 1 x 32 x 160 x 160 mask prototypes; a
plate's mask is sigmoid(coefficients · prototypes), cropped to its box. The mask gives the plate's
outline, which is tighter (and rotated) where the box is not.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from workers.detectors.base import FloatArray, Polygon, RawDetection, as_rgb, clip_boxes, nms

DEFAULT_MIN_SCORE = 0.25
NMS_IOU = 0.45
PAD_VALUE = 114  # the grey YOLO letterboxes with during training
_MASK_COEFFS = 32


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return out


class PlateDetector:
    """Wraps an onnxruntime session of platedet.onnx."""

    def __init__(self, session: Any) -> None:
        self.session = session
        model_input = session.get_inputs()[0]
        self._input_name: str = model_input.name
        height, width = model_input.shape[-2:]
        # Exported with a fixed size; fall back to 640 if a future export makes it dynamic.
        self.input_h = height if isinstance(height, int) else 640
        self.input_w = width if isinstance(width, int) else 640
        self._dtype = np.float16 if "float16" in model_input.type else np.float32

    def _letterbox(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[Any], float, int, int]:
        h, w = image.shape[:2]
        ratio = min(self.input_h / h, self.input_w / w)
        new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
        interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
        left, top = (self.input_w - new_w) // 2, (self.input_h - new_h) // 2
        canvas = np.full((self.input_h, self.input_w, 3), PAD_VALUE, dtype=np.uint8)
        canvas[top : top + new_h, left : left + new_w] = resized
        blob = (canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0).astype(self._dtype)
        return blob, ratio, left, top

    def detect(
        self, image_rgb: npt.NDArray[np.uint8], min_score: float = DEFAULT_MIN_SCORE
    ) -> list[RawDetection]:
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        blob, ratio, left, top = self._letterbox(image)
        raw, protos = self.session.run(None, {self._input_name: blob})
        preds = np.asarray(raw[0], dtype=np.float32).T  # 8400 x 37
        scores = preds[:, 4]
        preds = preds[scores > min_score]
        if not len(preds):
            return []
        cx, cy, bw, bh = preds[:, 0], preds[:, 1], preds[:, 2], preds[:, 3]
        boxes_lb = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        keep = nms(boxes_lb, preds[:, 4], NMS_IOU)
        preds, boxes_lb = preds[keep], boxes_lb[keep]
        # Undo the letterbox: letterboxed pixels -> original pixels.
        shift = np.array([left, top, left, top], dtype=np.float32)
        boxes = clip_boxes(((boxes_lb - shift) / ratio).astype(np.float32), w, h)
        proto = np.asarray(protos[0], dtype=np.float32)  # 32 x 160 x 160
        found: list[RawDetection] = []
        for pred, box in zip(preds, boxes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            polygon = self._polygon(pred[5 : 5 + _MASK_COEFFS], proto, (x1, y1, x2, y2), ratio, left, top)
            if polygon is None:
                polygon = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
            found.append(RawDetection("plate", float(pred[4]), (x1, y1, x2, y2), polygon))
        return found

    def _polygon(
        self,
        coeffs: FloatArray,
        proto: FloatArray,
        box: tuple[float, float, float, float],
        ratio: float,
        left: int,
        top: int,
    ) -> Polygon | None:
        """The plate's outline as 4 corners in original pixels, from its mask; None if the mask is empty."""
        channels, ph, pw = proto.shape
        down_x, down_y = self.input_w / pw, self.input_h / ph  # 4 for a 640 input
        x1, y1, x2, y2 = box
        # The box in prototype cells, one cell of margin so the upsampled edge is not cut off.
        bx1, by1 = (x1 * ratio + left) / down_x, (y1 * ratio + top) / down_y
        bx2, by2 = (x2 * ratio + left) / down_x, (y2 * ratio + top) / down_y
        cx1, cy1 = max(0, math.floor(bx1) - 1), max(0, math.floor(by1) - 1)
        cx2, cy2 = min(pw, math.ceil(bx2) + 1), min(ph, math.ceil(by2) + 1)
        if cx2 <= cx1 or cy2 <= cy1:
            return None
        crop = proto[:, cy1:cy2, cx1:cx2].reshape(channels, -1)
        logits: FloatArray = np.asarray(coeffs @ crop, dtype=np.float32).reshape(cy2 - cy1, cx2 - cx1)
        # Upsample the crop to its size in original pixels (at least 4x so small plates get an outline).
        scale_x = max(4.0, down_x / ratio)
        scale_y = max(4.0, down_y / ratio)
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
        px = ((corners[:, 0] / to_mask_x + cx1) * down_x - left) / ratio
        py = ((corners[:, 1] / to_mask_y + cy1) * down_y - top) / ratio
        px = np.clip(px, x1, x2)
        py = np.clip(py, y1, y2)
        return tuple((float(a), float(b)) for a, b in zip(px, py, strict=True))
