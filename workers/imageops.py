"""Pixels in, pixels out: decode, grow boxes into regions, blur regions, encode. Pure numpy/OpenCV.

Images keep what they were stored as (gray, BGR, BGRA; 8 or 16 bit) so a PNG with transparency or 16-bit
depth comes back the same way; detectors get an 8-bit BGR view.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import PayloadTooLargeError, PermanentError, ValidationError
from shared.imageformat import is_animated, pixel_weight, sniff_format
from shared.jobs import ImageFormat
from shared.jpeg import header_segments
from workers import metadata

Pixels = npt.NDArray[Any]  # uint8 or uint16; HxW, HxWx3 (BGR) or HxWx4 (BGRA)
BGR = npt.NDArray[np.uint8]
Region = tuple[int, int, int, int]  # x1, y1, x2, y2; x2/y2 exclusive

AUTO_SIGMA_MIN = 8.0
AUTO_SIGMA_RATIO = 0.2
# Blurs wider than this run on a downscaled copy: same look, a fraction of the cost of a huge kernel.
_DIRECT_SIGMA_MAX = 6.0
_SMALL_SIGMA = 4.0

_UNDECODABLE = "image could not be decoded"


@dataclass(frozen=True)
class DecodedImage:
    pixels: Pixels  # as stored, orientation applied
    bgr: BGR  # 8-bit, 3-channel, for the detectors
    format: ImageFormat
    width: int
    height: int


# -- header probing -----------------------------------------------------------------------------------------


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    for segment in header_segments(data):
        if segment.marker in _JPEG_SOF and segment.offset + 9 <= len(data):
            height, width = struct.unpack(">HH", data[segment.offset + 5 : segment.offset + 9])
            return width, height
    return None


def probe(data: bytes) -> tuple[ImageFormat, int, int]:
    """Format and stored size from the header alone, so oversized images are refused before decoding.
    Animated PNG and WebP are refused too: the decoder would hand back their first frame only."""
    fmt = sniff_format(data)
    if is_animated(data):
        raise ValidationError("animated images are not supported: Veil blurs still images")
    size: tuple[int, int] | None = None
    if fmt is ImageFormat.JPEG:
        size = _jpeg_size(data)
    elif fmt is ImageFormat.PNG and data[12:16] == b"IHDR" and len(data) >= 24:
        size = struct.unpack(">II", data[16:24])
    elif fmt is ImageFormat.WEBP:
        size = metadata.webp_size(data)
    if fmt is None or size is None or size[0] < 1 or size[1] < 1:
        raise ValidationError(_UNDECODABLE)
    return fmt, size[0], size[1]


# -- orientation (OpenCV applies EXIF orientation to JPEG itself; PNG/WebP are turned here) -------------


def apply_orientation(pixels: Pixels, orientation: int) -> Pixels:
    """Turn stored pixels upright for an EXIF orientation 1..8."""
    ops: dict[int, Any] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    if orientation not in ops:
        return pixels
    return np.ascontiguousarray(ops[orientation](pixels))


# -- decode / encode ----------------------------------------------------------------------------------------


def to_bgr8(pixels: Pixels) -> BGR:
    """An 8-bit 3-channel copy or view of any supported pixel layout."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.ndim == 2:
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if pixels.shape[2] == 4:
        return np.ascontiguousarray(pixels[:, :, :3])
    return np.ascontiguousarray(pixels)


def decode(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode JPEG/PNG/WebP bytes, upright. Refuses images over ``max_pixels`` (8-bit pixels: a 16-bit
    PNG's count twice) before decoding them."""
    fmt, width, height = probe(data)
    if width * height * pixel_weight(data) > max_pixels:  # a 16-bit PNG's pixels count twice
        raise PayloadTooLargeError(f"image is {width}x{height} pixels, over the limit of {max_pixels}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    # JPEG has no alpha/16-bit; IMREAD_COLOR makes OpenCV apply its EXIF orientation (and convert CMYK).
    flags = cv2.IMREAD_COLOR if fmt is ImageFormat.JPEG else cv2.IMREAD_UNCHANGED
    try:
        pixels: Pixels | None = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise ValidationError(_UNDECODABLE) from exc
    if pixels is None or pixels.size == 0 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValidationError(_UNDECODABLE)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] not in (3, 4):
        raise ValidationError(_UNDECODABLE)
    if fmt is not ImageFormat.JPEG:
        exif = metadata.exif_payload(data, fmt)
        if exif:
            pixels = apply_orientation(pixels, metadata.orientation(exif))
    h, w = pixels.shape[:2]
    return DecodedImage(pixels=pixels, bgr=to_bgr8(pixels), format=fmt, width=w, height=h)


def encode(pixels: Pixels, fmt: ImageFormat, *, quality: int = 92) -> bytes:
    """Encode without any metadata (EXIF, ICC, XMP are all dropped)."""
    if fmt is ImageFormat.JPEG:
        # JPEG is 8-bit without alpha.
        if pixels.dtype == np.uint16 or (pixels.ndim == 3 and pixels.shape[2] == 4):
            pixels = to_bgr8(pixels)
        ok, out = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    elif fmt is ImageFormat.PNG:
        ok, out = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        if pixels.dtype == np.uint16:
            pixels = (pixels >> 8).astype(np.uint8)
        if pixels.ndim == 2:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
        ok, out = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise PermanentError(f"image could not be encoded as {fmt.value}")
    return bytes(out.tobytes())


# -- regions -------------------------------------------------------------------------------------------------


def regions_from_boxes(
    boxes: Iterable[Sequence[float]], *, padding: float, shrink: float, width: int, height: int
) -> list[Region]:
    """Grow each box by ``padding`` then take back ``shrink`` (both ratios of its size, per side).

    Rounded outwards to whole pixels, clipped to the image; empty results are dropped.
    """
    regions: list[Region] = []
    grow = padding - shrink
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        bw, bh = x2 - x1, y2 - y1
        if not (bw > 0 and bh > 0) or not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        rx1 = max(0, math.floor(x1 - grow * bw))
        ry1 = max(0, math.floor(y1 - grow * bh))
        rx2 = min(width, math.ceil(x2 + grow * bw))
        ry2 = min(height, math.ceil(y2 + grow * bh))
        if rx2 > rx1 and ry2 > ry1:
            regions.append((rx1, ry1, rx2, ry2))
    return regions


def auto_sigma(region: Region) -> float:
    """Scale with the region so a large face is as unreadable as a small one."""
    x1, y1, x2, y2 = region
    return max(AUTO_SIGMA_MIN, AUTO_SIGMA_RATIO * max(x2 - x1, y2 - y1))


def _gaussian(patch: Pixels, sigma: float) -> Pixels:
    if sigma <= _DIRECT_SIGMA_MAX:
        blurred: Pixels = cv2.GaussianBlur(patch, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        return blurred
    # Downscale by f, blur by sigma/f, upscale: a wide Gaussian is smooth, so nothing is lost.
    factor = sigma / _SMALL_SIGMA
    h, w = patch.shape[:2]
    small_size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(patch, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), _SMALL_SIGMA, borderType=cv2.BORDER_REFLECT)
    up: Pixels = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return up


def _pixelate(patch: Pixels, block: int) -> Pixels:
    h, w = patch.shape[:2]
    small = cv2.resize(patch, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
    out: Pixels = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return out


def blur_regions(pixels: Pixels, regions: Iterable[Region], sigma: float | None) -> Pixels:
    """A copy of ``pixels`` with each region Gaussian-blurred at ``sigma`` (None: :func:`auto_sigma` of
    each region); see :func:`blur_each`."""
    return blur_each(pixels, [(region, sigma) for region in regions])


def blur_each(pixels: Pixels, blurs: Iterable[tuple[Region, float | None]]) -> Pixels:
    """A copy of ``pixels`` with each region Gaussian-blurred at its own sigma (None: :func:`auto_sigma`);
    nothing outside the regions changes.

    One copy of the image however many regions there are (copying a 12 MP photo takes ~17 ms). Each blur
    sees a margin of surrounding image so the region blends in, but only the region is written. Regions
    are blurred in order on the copy, so where two overlap the later one blurs the earlier one's result:
    never less blurred than either alone. Alpha is left as is: transparency keeps its shape, colours are
    hidden.
    """
    out = pixels.copy()
    h, w = pixels.shape[:2]
    # Index of the channels to blur: all of them, or colour without alpha.
    colour: tuple[slice, ...] = (slice(0, 3),) if pixels.ndim == 3 and pixels.shape[2] == 4 else ()
    for region, sigma in blurs:
        x1, y1, x2, y2 = (int(v) for v in region)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        s = float(sigma) if sigma is not None else auto_sigma((x1, y1, x2, y2))
        margin = math.ceil(3 * s)
        cx1, cy1 = max(0, x1 - margin), max(0, y1 - margin)
        cx2, cy2 = min(w, x2 + margin), min(h, y2 + margin)
        context = np.ascontiguousarray(out[(slice(cy1, cy2), slice(cx1, cx2), *colour)])
        inner = (slice(y1 - cy1, y2 - cy1), slice(x1 - cx1, x2 - cx1))
        blurred = _gaussian(context, s)[inner]
        target = (slice(y1, y2), slice(x1, x2), *colour)
        original = pixels[target]
        # A linear ramp is a fixed point of a Gaussian; make sure non-flat content really changes.
        if np.array_equal(blurred, original) and not (original == original[0, 0]).all():
            blurred = _pixelate(np.ascontiguousarray(original), max(2, round(s)))
            if np.array_equal(blurred, original):
                blurred = np.full_like(original, np.mean(original, axis=(0, 1)).astype(original.dtype))
        out[target] = blurred
    return out


def union_area(regions: Iterable[Region], width: int, height: int) -> int:
    """Pixels covered by at least one region (for reporting and tests)."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in regions:
        mask[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = True
    return int(mask.sum())
