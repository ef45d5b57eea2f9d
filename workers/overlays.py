"""Worker-side pieces of the vendor-facade features, pure numpy/OpenCV so the pipeline can call them:

* :func:`strength_sigma` — Plate Recognizer's blur intensity (0 = don't blur, 1..10) → Gaussian sigma;
* :func:`warp_logo` — a logo warped onto a plate's quadrilateral (Plate Recognizer's ``logo``);
* :func:`exclusion_filter` — drop detections whose centre is in an excluded margin or box;
* :func:`split_chunks` — overlapping horizontal chunks of a panorama (``split`` / ``overlap``); the pipeline
  runs them as tiles (:mod:`workers.tiling`) besides its usual passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import ValidationError
from shared.jobs import Exclusion
from workers.detectors.base import Polygon, RawDetection

Pixels = npt.NDArray[Any]
Region = tuple[int, int, int, int]

# Sigma as a ratio of the region's longest side at strength 10 (auto blur uses 0.2).
STRENGTH_MAX_RATIO = 0.25
MIN_CHUNK_ASPECT = 4 / 3  # chunks are at least this wide relative to the image height
CHUNK_NMS_IOU = 0.5


def strength_sigma(strength: int, region: Region) -> float | None:
    """Gaussian sigma for a blur strength of 0..10 on ``region``; ``None`` for 0 (detect, don't blur).

    Linear in the strength and proportional to the region's longest side, so 10 hides a plate of any
    size and 1 only softens it."""
    if not 0 <= strength <= 10:
        raise ValueError(f"blur strength must be 0..10, not {strength}")
    if strength == 0:
        return None
    x1, y1, x2, y2 = region
    side = max(x2 - x1, y2 - y1, 1)
    return max(1.0, STRENGTH_MAX_RATIO * side * strength / 10)


# -- logo -----------------------------------------------------------------------------------------------


def decode_logo(data: bytes) -> npt.NDArray[np.uint8]:
    """Logo bytes (JPEG/PNG/WebP) → 8-bit BGRA; opaque when the file has no alpha."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        logo: Pixels | None = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ValidationError("the logo could not be decoded") from exc
    if logo is None or logo.size == 0:
        raise ValidationError("the logo could not be decoded")
    if logo.dtype == np.uint16:
        logo = (logo >> 8).astype(np.uint8)
    if logo.ndim == 2:
        logo = cv2.cvtColor(logo, cv2.COLOR_GRAY2BGRA)
    elif logo.shape[2] == 3:
        logo = cv2.cvtColor(logo, cv2.COLOR_BGR2BGRA)
    return np.ascontiguousarray(logo, dtype=np.uint8)


def order_corners(polygon: Polygon) -> Polygon:
    """4 corners in reading order: top-left, top-right, bottom-right, bottom-left (clockwise on screen),
    whatever order the detector gave them in."""
    if len(polygon) != 4:
        raise ValueError(f"a plate polygon has 4 corners, not {len(polygon)}")
    cx = sum(p[0] for p in polygon) / 4
    cy = sum(p[1] for p in polygon) / 4
    clockwise = sorted(polygon, key=lambda p: math.atan2(p[1] - cy, p[0] - cx))  # y down: clockwise
    start = min(range(4), key=lambda i: clockwise[i][0] + clockwise[i][1])  # nearest the origin
    return tuple(clockwise[start:] + clockwise[:start])


def warp_logo(pixels: Pixels, logo_bgra: npt.NDArray[np.uint8], polygon: Polygon) -> Pixels:
    """A copy of ``pixels`` with the logo warped onto the plate ``polygon`` (4 corners, any order; the
    logo's top edge goes on the plate's top edge), alpha-blended. Gray, BGR and BGRA; 8 or 16 bit."""
    polygon = order_corners(polygon)
    h, w = pixels.shape[:2]
    lh, lw = logo_bgra.shape[:2]
    src = np.array([[0, 0], [lw, 0], [lw, lh], [0, lh]], dtype=np.float32)
    dst = np.array(polygon, dtype=np.float32)
    # Only the polygon's bounding rect (clipped) changes: warp into that window, not the whole image.
    x1 = max(0, math.floor(float(dst[:, 0].min())))
    y1 = max(0, math.floor(float(dst[:, 1].min())))
    x2 = min(w, math.ceil(float(dst[:, 0].max())))
    y2 = min(h, math.ceil(float(dst[:, 1].max())))
    out = pixels.copy()
    if x2 <= x1 or y2 <= y1:
        return out
    matrix = cv2.getPerspectiveTransform(src, dst - np.array([x1, y1], dtype=np.float32))
    warped = cv2.warpPerspective(
        logo_bgra, matrix, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    alpha = warped[:, :, 3:4].astype(np.float32) / 255.0
    colour = warped[:, :, :3].astype(np.float32)
    window = out[y1:y2, x1:x2]
    scale = 257.0 if pixels.dtype == np.uint16 else 1.0  # 8-bit logo on a 16-bit image
    if window.ndim == 2:
        gray = cv2.cvtColor(warped[:, :, :3], cv2.COLOR_BGR2GRAY).astype(np.float32)[:, :, None]
        base = window.astype(np.float32)[:, :, None]
        blended = base * (1 - alpha) + gray * scale * alpha
        out[y1:y2, x1:x2] = np.rint(blended[:, :, 0]).astype(pixels.dtype)
    else:
        base = window[:, :, :3].astype(np.float32)
        blended = base * (1 - alpha) + colour * scale * alpha
        out[y1:y2, x1:x2, :3] = np.rint(blended).astype(pixels.dtype)
        if window.shape[2] == 4:  # where the logo is opaque, so is the result
            top = (255.0 * scale) * alpha[:, :, 0]
            out[y1:y2, x1:x2, 3] = np.maximum(window[:, :, 3], np.rint(top).astype(pixels.dtype))
    return out


# -- exclusion zones ---------------------------------------------------------------------------------------


def exclusion_filter(
    detections: Sequence[RawDetection], exclusion: Exclusion | None, width: int, height: int
) -> list[RawDetection]:
    """The detections whose box centre is outside every excluded margin and the excluded box."""
    if exclusion is None:
        return list(detections)
    return [det for det in detections if not exclusion.covers(det.box, width, height)]


# -- panoramas ---------------------------------------------------------------------------------------------


def split_chunks(
    width: int, height: int, overlap_percent: float, count: int | None = None
) -> list[tuple[int, int]]:
    """Horizontal chunks ``(x1, x2)`` covering ``width``, neighbours overlapping by ``overlap_percent`` of a
    chunk's width: ``count`` of them (Plate Recognizer's client sends ``split`` as a chunk count), else
    each about 4:3 (never narrower), one when the image isn't wide."""
    if not 0 <= overlap_percent < 100:
        raise ValueError(f"overlap must be 0..<100 percent, not {overlap_percent}")
    if count is not None:
        if count < 1:
            raise ValueError(f"chunk count must be at least 1, not {count}")
        # count chunks of width c with overlap o cover c * (1 + (count - 1) * (1 - o)) = width.
        chunk = min(width, max(1, math.ceil(width / (1 + (count - 1) * (1 - overlap_percent / 100)))))
        starts = np.linspace(0, width - chunk, count)
        return [(round(s), round(s) + chunk) for s in starts]
    chunk = max(1, round(height * MIN_CHUNK_ASPECT))
    if width <= chunk:
        return [(0, width)]
    step = chunk * (1 - overlap_percent / 100)
    count = math.ceil((width - chunk) / max(step, 1.0)) + 1
    starts = np.linspace(0, width - chunk, count)
    return [(round(s), round(s) + chunk) for s in starts]
