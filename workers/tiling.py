"""Overlapping tiles and the merging of detections found in them, so small objects in large photos are seen
at (close to) native resolution instead of after the whole photo was shrunk to the model's input size.

A detector runs once on the whole image (large objects, which tiles may cut) and once per tile; the
detections are shifted back to image pixels and merged with greedy NMS plus a containment rule (a box mostly
inside a better one is the same object seen cut by a tile edge).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from workers.detectors.base import RawDetection
from workers.detectors.fusion import combined

Tile = tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels, x2/y2 exclusive


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((size - overlap) / step)
    count = max(2, count)
    # Spread the tiles evenly so the overlap is at least `overlap` everywhere.
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles of ``tile`` x ``tile`` pixels (less where the image is smaller) covering the image, neighbours
    overlapping by at least ``overlap`` pixels. One tile (the whole image) if it fits."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(f"bad tiling: tile {tile}, overlap {overlap}")
    tiles: list[Tile] = []
    for y in _starts(height, tile, overlap):
        for x in _starts(width, tile, overlap):
            tiles.append((x, y, min(width, x + tile), min(height, y + tile)))
    return tiles


def shift(detection: RawDetection, dx: float, dy: float) -> RawDetection:
    x1, y1, x2, y2 = detection.box
    polygon = tuple((px + dx, py + dy) for px, py in detection.polygon) if detection.polygon else None
    return replace(detection, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), polygon=polygon)


def _overlaps(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(IoU of a and b, share of a's area inside b)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    union = area_a + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return (inter / union if union > 0 else 0.0), (inter / area_a if area_a > 0 else 0.0)


def merge(detections: Sequence[RawDetection], iou: float, contain: float = 0.8) -> list[RawDetection]:
    """Greedy NMS over detections from several passes, best score first.

    A detection is the same object as a better-scoring kept one when their IoU is ``>= iou`` or when it lies
    ``>= contain`` inside it. The kept box then grows to cover both: a copy cut by a tile edge or a slightly
    larger box from another scale never leaves part of the object outside the blurred region.
    """
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    kept: list[RawDetection] = []
    for index in order:
        det = detections[index]
        for k, best in enumerate(kept):
            overlap, inside = _overlaps(det.box, best.box)
            if overlap >= iou or inside >= contain:
                x1, y1, x2, y2 = best.box
                a1, b1, a2, b2 = det.box
                grown = (min(x1, a1), min(y1, b1), max(x2, a2), max(y2, b2))
                # Its sources and read text join the kept one's; the kept polygon stays.
                kept[k] = replace(combined(best, det, grown), score=best.score, polygon=best.polygon)
                break
        else:
            kept.append(det)
    return kept


Detect = Callable[[npt.NDArray[np.uint8]], list[RawDetection]]


EDGE_MARGIN = 2.0


def cut_by_tile(box: Sequence[float], tile: Tile, width: int, height: int) -> bool:
    """Whether ``box`` (tile pixels) touches an edge of the tile that is not an edge of the image: the object
    is probably cut there, and the overlapping neighbour (or the whole-image pass) sees it whole."""
    x1, y1, x2, y2 = tile
    return (
        (x1 > 0 and box[0] <= EDGE_MARGIN)
        or (y1 > 0 and box[1] <= EDGE_MARGIN)
        or (x2 < width and box[2] >= (x2 - x1) - EDGE_MARGIN)
        or (y2 < height and box[3] >= (y2 - y1) - EDGE_MARGIN)
    )


def detect_tiled(image: npt.NDArray[np.uint8], detect: Detect, tiles: Sequence[Tile]) -> list[RawDetection]:
    """Run ``detect`` on each tile (a crop of ``image``); detections in image pixels, minus those cut by an
    inner tile edge."""
    height, width = image.shape[:2]
    found: list[RawDetection] = []
    for tile in tiles:
        x1, y1, x2, y2 = tile
        crop = np.ascontiguousarray(image[y1:y2, x1:x2])
        found.extend(shift(d, x1, y1) for d in detect(crop) if not cut_by_tile(d.box, tile, width, height))
    return found
