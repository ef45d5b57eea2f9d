"""What a detector returns, and the small numpy helpers the detectors share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

Label = Literal["face", "plate"]
BoxF = tuple[float, float, float, float]
Polygon = tuple[tuple[float, float], ...]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class RawDetection:
    """One object found, in pixels of the image given to ``detect`` (x2/y2 are the far edges)."""

    label: Label
    score: float
    box: BoxF  # x1, y1, x2, y2
    polygon: Polygon | None = None  # plates: the mask's 4 corners; faces: None
    # Plates: what the text recogniser read on it (None: not read).
    text: str | None = None
    text_score: float | None = None
    # Which detectors found it (set where sources are fused, workers.detectors.fusion); empty: one source.
    sources: tuple[str, ...] = ()
    # A plate left unblurred because its text matched the job's skip_regexp (see shared.jobs).
    skipped: bool = False


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou: float) -> IntArray:
    """Greedy non-maximum suppression; returns indices of kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is ``>= iou``.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {s.shape[0]} scores")
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap < iou]
    return np.asarray(keep, dtype=np.intp)


def clip_boxes(boxes: FloatArray, width: int, height: int) -> FloatArray:
    """Clip x1,y1,x2,y2 rows to the image; returns a new array."""
    out = boxes.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


def as_rgb(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Validate a detector input: HxWx3 uint8 (already RGB)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("empty image")
    return image


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_bgr_blob(image_rgb: npt.NDArray[np.uint8], align: int) -> FloatArray:
    """``image_rgb`` as a 1 x 3 x H x W float BGR blob, zero-padded on the right and bottom to multiples of
    ``align`` (the input RetinaFace and YuNet take, both trained on BGR)."""
    h, w = image_rgb.shape[:2]
    blob = np.zeros((1, 3, round_up(h, align), round_up(w, align)), dtype=np.float32)
    blob[0, :, :h, :w] = image_rgb[:, :, ::-1].transpose(2, 0, 1)
    return blob


def zoomed(image: npt.NDArray[np.uint8], upscale: float, max_side: int) -> npt.NDArray[np.uint8]:
    """``image`` scaled by up to ``upscale`` (small faces in small photos are found far better zoomed), but
    never to a long side over ``max_side``; a zoom under 1.1 is skipped, not worth the cost of its pass."""
    h, w = image.shape[:2]
    ratio = min(max(1.0, upscale), max_side / max(h, w))
    if 1.0 < ratio < 1.1:
        ratio = 1.0
    if ratio == 1.0:
        return image
    size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if ratio < 1.0 else cv2.INTER_LINEAR)
    return np.asarray(resized, dtype=np.uint8)  # uint8 in, uint8 out: no copy
