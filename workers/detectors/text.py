"""Text regions with PP-OCR's text detector (DB, "Differentiable Binarization"), the models of RapidOCR.

The network maps a photo (BGR, ``(x / 255 - 0.5) / 0.5``, sides multiples of 32) to a per-pixel text
probability at the input's resolution. Text regions are the connected areas over ``thresh``; each becomes
its minimum-area rotated rectangle, scored by the mean probability inside it, and is grown back
("unclipped") by ``area * unclip_ratio / perimeter`` on every side, because the network was trained to mark
a shrunk core of each text line. For a rectangle that offset has a closed form, so no polygon clipper is
needed: a W x H rectangle becomes (W + 2d) x (H + 2d) around the same centre and angle.

The photo is run at a bounded long side (``max_side``; small photos are zoomed up to ``max_upscale``), so
the cost per photo is bounded too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from workers.detectors.base import BoxF, FloatArray, Polygon, as_rgb
from workers.sessions import Session

DEFAULT_MAX_SIDE = 960
DEFAULT_MAX_UPSCALE = 2.0
THRESH = 0.3  # probability for a pixel to count as text (PP-OCR's default)
BOX_THRESH = 0.5  # mean probability inside a region to keep it (PP-OCR's default 0.5-0.6)
UNCLIP_RATIO = 1.6  # PP-OCR's default
MIN_SIDE = 3  # map pixels: smaller regions are noise
MAX_CANDIDATES = 1000
_ALIGN = 32


@dataclass(frozen=True)
class RotatedRect:
    """A rotated rectangle: centre, ``width`` along ``angle`` (degrees, counter-clockwise from the x axis in
    image coordinates, in (-90, 90]), ``height`` across it. Width is the longer side unless the region is
    taller than wide after the angle is normalised (vertical text keeps angle near 0 and height > width)."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float

    def corners(self) -> FloatArray:
        """4 x 2 corners: top-left, top-right, bottom-right, bottom-left (as seen along ``angle``)."""
        a = math.radians(self.angle)
        ux, uy = math.cos(a), math.sin(a)  # along the width
        vx, vy = -uy, ux  # along the height (downwards for angle 0)
        hw, hh = self.width / 2, self.height / 2
        pts = [
            (self.cx - hw * ux - hh * vx, self.cy - hw * uy - hh * vy),
            (self.cx + hw * ux - hh * vx, self.cy + hw * uy - hh * vy),
            (self.cx + hw * ux + hh * vx, self.cy + hw * uy + hh * vy),
            (self.cx - hw * ux + hh * vx, self.cy - hw * uy + hh * vy),
        ]
        return np.asarray(pts, dtype=np.float32)

    def bounds(self) -> BoxF:
        c = self.corners()
        return (float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max()))

    def polygon(self) -> Polygon:
        return tuple((float(x), float(y)) for x, y in self.corners())

    def scaled(self, fx: float, fy: float) -> RotatedRect:
        """The rectangle in an image scaled by (fx, fy) (the model input -> the photo: fx, fy ~ 1 / ratio).
        Exact for uniform scaling, which is what the detector does up to rounding."""
        corners = self.corners() * np.array([fx, fy], dtype=np.float32)
        return rect_from_points(corners)

    def grown(self, across: float, updown: float) -> RotatedRect:
        """Grown by ``across`` of the width on each end and ``updown`` of the height above and below."""
        return RotatedRect(
            self.cx, self.cy, self.width * (1 + 2 * across), self.height * (1 + 2 * updown), self.angle
        )


def rect_from_points(points: npt.ArrayLike) -> RotatedRect:
    """The minimum-area rotated rectangle of ``points`` (N x 2), with the angle normalised so that the
    width runs within 45 degrees of the x axis: for a horizontal-ish text line width is its length."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    (cx, cy), (w, h), angle = cv2.minAreaRect(pts)
    return _normalised(float(cx), float(cy), float(w), float(h), float(angle))


def _normalised(cx: float, cy: float, w: float, h: float, angle: float) -> RotatedRect:
    # OpenCV's angle is that of the side it calls width; turn by 90 degrees until it is within +-45.
    while angle > 45:
        angle -= 90
        w, h = h, w
    while angle <= -45:
        angle += 90
        w, h = h, w
    return RotatedRect(cx, cy, w, h, angle)


def unclip(rect: RotatedRect, ratio: float = UNCLIP_RATIO) -> RotatedRect:
    """DB's unclip for a rectangle: offset every side by ``area * ratio / perimeter``."""
    perimeter = 2 * (rect.width + rect.height)
    if perimeter <= 0:
        return rect
    d = rect.width * rect.height * ratio / perimeter
    return RotatedRect(rect.cx, rect.cy, rect.width + 2 * d, rect.height + 2 * d, rect.angle)


def input_size(height: int, width: int, max_side: int, max_upscale: float) -> tuple[int, int, float]:
    """(input height, input width, ratio): the photo scaled to a long side of ``max_side`` (zoomed by at most
    ``max_upscale``), each side rounded to a multiple of 32 (at least 32)."""
    ratio = min(max_upscale, max_side / max(height, width))
    new_h = max(_ALIGN, round(height * ratio / _ALIGN) * _ALIGN)
    new_w = max(_ALIGN, round(width * ratio / _ALIGN) * _ALIGN)
    return new_h, new_w, ratio


def region_score(prob: FloatArray, corners: FloatArray) -> float:
    """Mean probability inside the polygon ``corners`` (map pixels): PP-OCR's "fast" box score."""
    h, w = prob.shape
    xs, ys = corners[:, 0], corners[:, 1]
    x1, x2 = int(np.clip(np.floor(xs.min()), 0, w - 1)), int(np.clip(np.ceil(xs.max()), 0, w - 1))
    y1, y2 = int(np.clip(np.floor(ys.min()), 0, h - 1)), int(np.clip(np.ceil(ys.max()), 0, h - 1))
    mask = np.zeros((y2 - y1 + 1, x2 - x1 + 1), dtype=np.uint8)
    shifted = (corners - np.array([x1, y1], dtype=np.float32)).round().astype(np.int32)
    cv2.fillPoly(mask, [shifted], 1)
    if not mask.any():
        return 0.0
    return float(cv2.mean(prob[y1 : y2 + 1, x1 : x2 + 1], mask)[0])


def regions_from_map(
    prob: FloatArray,
    thresh: float = THRESH,
    box_thresh: float = BOX_THRESH,
    unclip_ratio: float = UNCLIP_RATIO,
    dilate: bool = True,
) -> list[tuple[RotatedRect, float]]:
    """The text regions of a probability map (H x W): (rotated rectangle in map pixels, score)."""
    bitmap = (prob > thresh).astype(np.uint8)
    if dilate:
        bitmap = np.asarray(cv2.dilate(bitmap, np.ones((2, 2), np.uint8)), np.uint8)
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[RotatedRect, float]] = []
    for contour in contours[:MAX_CANDIDATES]:
        rect = rect_from_points(contour.reshape(-1, 2))
        if min(rect.width, rect.height) < MIN_SIDE:
            continue
        score = region_score(prob, rect.corners())
        if score < box_thresh:
            continue
        grown = unclip(rect, unclip_ratio)
        if min(grown.width, grown.height) < MIN_SIDE + 2:
            continue
        found.append((grown, score))
    return found


@dataclass(frozen=True)
class TextRegion:
    """A text line in pixels of the photo given to ``detect``."""

    rect: RotatedRect
    score: float

    @property
    def box(self) -> BoxF:
        return self.rect.bounds()


class TextDetector:
    """Wraps an onnxruntime session of PP-OCR's DB text detector (input ``x``: 1 x 3 x H x W, any sides that
    are multiples of 32; output: 1 x 1 x H x W probabilities)."""

    def __init__(
        self,
        session: Session,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        max_upscale: float = DEFAULT_MAX_UPSCALE,
        thresh: float = THRESH,
        box_thresh: float = BOX_THRESH,
        unclip_ratio: float = UNCLIP_RATIO,
    ) -> None:
        self.session = session
        self._input_name: str = session.get_inputs()[0].name
        self.max_side = max_side
        self.max_upscale = max_upscale
        self.thresh = thresh
        self.box_thresh = box_thresh
        self.unclip_ratio = unclip_ratio

    def probability(self, image_rgb: npt.NDArray[np.uint8]) -> tuple[FloatArray, float, float]:
        """(probability map, fx, fy): map pixel (x, y) is photo pixel (x * fx, y * fy)."""
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        new_h, new_w, ratio = input_size(h, w, self.max_side, self.max_upscale)
        interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
        # BGR, as PaddleOCR trained it; (x / 255 - 0.5) / 0.5.
        blob = resized[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) * (2.0 / 255.0) - 1.0
        (out,) = self.session.run(None, {self._input_name: np.ascontiguousarray(blob)})
        prob = np.asarray(out[0, 0], dtype=np.float32)
        return prob, w / new_w, h / new_h

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[TextRegion]:
        prob, fx, fy = self.probability(image_rgb)
        h, w = image_rgb.shape[:2]
        found: list[TextRegion] = []
        for rect, score in regions_from_map(prob, self.thresh, self.box_thresh, self.unclip_ratio):
            scaled = rect.scaled(fx, fy)
            x1, y1, x2, y2 = scaled.bounds()
            if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
                continue
            found.append(TextRegion(scaled, score))
        return found
