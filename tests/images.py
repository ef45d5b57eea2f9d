"""Synthetic test images the models really respond to, built from scikit-image photos (public domain).

Nothing here reads the evaluation set: tests must run on a user's machine.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from skimage import data

BGRImage = npt.NDArray[np.uint8]


def astronaut_rgb() -> BGRImage:
    """scikit-image's astronaut (NASA, public domain): 512x512 RGB, one face at about x 180-270, y 58-178."""
    return np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]


def astronaut_bgr() -> BGRImage:
    return np.ascontiguousarray(astronaut_rgb()[:, :, ::-1])


def _plate(text: str, width: int, height: int) -> BGRImage:
    """A Mercosur-style plate, flat: white, thin black border, blue band on top, bold black characters."""
    plate = np.full((height, width, 3), 245, dtype=np.uint8)
    band = max(6, height // 5)
    plate[:band] = (160, 70, 20)  # BGR dark blue
    cv2.putText(plate, "BRASIL", (width // 2 - band * 2, band - band // 4), cv2.FONT_HERSHEY_SIMPLEX,
                band / 30, (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    font = cv2.FONT_HERSHEY_DUPLEX
    glyph_h = height - band - max(8, height // 6)
    scale = cv2.getFontScaleFromHeight(font, glyph_h, 3)
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3)
    scale *= min(1.0, (width * 0.9) / tw)
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3)
    origin = ((width - tw) // 2, band + (height - band + th) // 2)
    cv2.putText(plate, text, origin, font, scale, (20, 20, 20), 3, cv2.LINE_AA)
    cv2.rectangle(plate, (0, 0), (width - 1, height - 1), (30, 30, 30), 2)
    return plate


def make_plate_scene(
    text: str = "BRA2E19", size: tuple[int, int] = (1280, 960), seed: int = 0
) -> tuple[BGRImage, tuple[int, int, int, int]]:
    """A 1280x960 photo with a dark car rear carrying a slightly perspective-warped ~200x60 plate.

    Returns the BGR image and the plate's true box (x1, y1, x2, y2, x2/y2 exclusive).
    """
    width, height = size
    rng = np.random.default_rng(seed)
    background = np.asarray(data.coffee(), dtype=np.uint8)[:, :, ::-1]  # type: ignore[no-untyped-call]
    scene = np.asarray(cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)
    # The car: a dark body with a lighter bumper and two tail lights, as a plate usually sits on one.
    cx, cy = width // 2, int(height * 0.62)
    body_w, body_h = int(width * 0.5), int(height * 0.36)
    bx1, by1 = cx - body_w // 2, cy - body_h // 2
    cv2.rectangle(scene, (bx1, by1), (bx1 + body_w, by1 + body_h), (45, 40, 38), -1)
    cv2.rectangle(scene, (bx1, by1 + int(body_h * 0.72)), (bx1 + body_w, by1 + body_h), (70, 70, 72), -1)
    cv2.rectangle(scene, (bx1 + 20, by1 + 40), (bx1 + 140, by1 + 90), (30, 30, 200), -1)
    cv2.rectangle(scene, (bx1 + body_w - 140, by1 + 40), (bx1 + body_w - 20, by1 + 90), (30, 30, 200), -1)
    # The plate, warped onto a slightly tilted quadrilateral.
    pw, ph = 200, 60
    plate = _plate(text, pw * 2, ph * 2)  # render big, let the warp scale down (anti-aliased glyphs)
    px1, py1 = cx - pw // 2, by1 + int(body_h * 0.45)
    jitter = rng.uniform(-4, 4, size=(4, 2))
    dst = np.array(
        [[px1, py1 + 3], [px1 + pw, py1 - 3], [px1 + pw - 2, py1 + ph - 2], [px1 + 2, py1 + ph + 2]],
        dtype=np.float32,
    ) + jitter.astype(np.float32)
    src = np.array([[0, 0], [pw * 2, 0], [pw * 2, ph * 2], [0, ph * 2]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(plate, matrix, (width, height), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ph * 2, pw * 2), 255, np.uint8), matrix, (width, height))
    scene[mask > 127] = warped[mask > 127]
    ys, xs = np.nonzero(mask > 127)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return scene, box


def to_rgb(bgr: npt.NDArray[np.uint8]) -> BGRImage:
    """BGR -> RGB, typed (OpenCV's stubs return a loose array type)."""
    return np.ascontiguousarray(bgr[:, :, ::-1])
