"""Faces with YuNet (OpenCV Zoo's ``face_detection_yunet_2023mar``, MIT), a third face source beside
CenterFace and RetinaFace: trained on WIDER FACE, it fires on small crowd faces the others miss.

An anchor-free detector on the stride 8, 16 and 32 grids, one prediction per cell, cells row by row. Per
cell and stride the network gives ``cls`` and ``obj`` (both already through a sigmoid; the score is their
geometric mean), ``bbox`` (centre offset in cells from the cell's top-left corner, log size in cells) and
5 landmarks (unused). Input: BGR 0..255, no normalisation, sides padded to multiples of 32 (zeros). The
shipped file is fixed at 640x640; :func:`workers.models.prepare.ensure_yunet` writes a copy with a dynamic
input size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from workers.detectors.base import FloatArray, RawDetection, as_rgb, clip_boxes, nms, padded_bgr_blob, zoomed
from workers.sessions import Session

DEFAULT_MIN_SCORE = 0.7
DEFAULT_MAX_SIDE = 1280
NMS_IOU = 0.3  # OpenCV's FaceDetectorYN default
STRIDES = (8, 16, 32)
_ALIGN = 32
_INPUT = "input"
_OUTPUTS = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox") for stride in STRIDES]


def decode(outputs: Mapping[str, FloatArray], height: int, width: int) -> tuple[FloatArray, FloatArray]:
    """The network's outputs (batch of 1, by name: ``cls_8`` ... ``bbox_32``) for an input of ``height`` x
    ``width`` (multiples of 32) -> (N x 4 boxes x1, y1, x2, y2 in input pixels, N scores), every cell."""
    boxes: list[FloatArray] = []
    scores: list[FloatArray] = []
    for stride in STRIDES:
        rows, cols = height // stride, width // stride
        cls = np.clip(np.asarray(outputs[f"cls_{stride}"], np.float32).reshape(-1), 0.0, 1.0)
        obj = np.clip(np.asarray(outputs[f"obj_{stride}"], np.float32).reshape(-1), 0.0, 1.0)
        bbox = np.asarray(outputs[f"bbox_{stride}"], np.float32).reshape(-1, 4)
        if len(cls) != rows * cols or len(bbox) != rows * cols:
            raise ValueError(f"stride {stride}: {len(cls)} cells for a {rows}x{cols} grid")
        row, col = np.divmod(np.arange(rows * cols, dtype=np.float32), np.float32(cols))
        cx = (col + bbox[:, 0]) * stride
        cy = (row + bbox[:, 1]) * stride
        half_w = np.exp(bbox[:, 2]) * stride / 2
        half_h = np.exp(bbox[:, 3]) * stride / 2
        boxes.append(np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1))
        scores.append(np.sqrt(cls * obj))
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


class YuNetDetector:
    """Wraps an onnxruntime session of the dynamic-input YuNet."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def detect(
        self,
        image_rgb: npt.NDArray[np.uint8],
        min_score: float = DEFAULT_MIN_SCORE,
        max_side: int = DEFAULT_MAX_SIDE,
        upscale: float = 1.0,
    ) -> list[RawDetection]:
        """Faces in pixels of ``image_rgb``; the image is zoomed by up to ``upscale`` but never to a long side
        over ``max_side`` (like :class:`workers.detectors.faces.FaceDetector`)."""
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        resized = zoomed(image, upscale, max_side)
        new_h, new_w = resized.shape[:2]
        blob = padded_bgr_blob(resized, _ALIGN)
        in_h, in_w = blob.shape[2:]
        outputs = dict(zip(_OUTPUTS, self.session.run(_OUTPUTS, {_INPUT: blob}), strict=True))
        boxes, scores = decode(outputs, in_h, in_w)
        index = np.nonzero(scores >= min_score)[0]
        if not len(index):
            return []
        boxes, scores = boxes[index], scores[index]
        keep = nms(boxes, scores, NMS_IOU)
        factors = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
        kept = clip_boxes((boxes[keep] / factors).astype(np.float32), w, h)
        found: list[RawDetection] = []
        for box, score in zip(kept.tolist(), scores[keep].tolist(), strict=True):
            x1, y1, x2, y2 = box
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                found.append(RawDetection("face", float(score), (x1, y1, x2, y2), None))
        return found
