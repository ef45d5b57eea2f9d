"""Tiles cover the image with the promised overlap; detections from tiles merge back into image pixels."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from workers.detectors.base import RawDetection
from workers.tiling import cut_by_tile, detect_tiled, merge, shift, tile_grid


def _covered(tiles: list[tuple[int, int, int, int]], width: int, height: int) -> bool:
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in tiles:
        mask[y1:y2, x1:x2] = True
    return bool(mask.all())


@pytest.mark.parametrize(
    ("width", "height"), [(1280, 720), (640, 640), (1632, 918), (3000, 500), (641, 2000)]
)
def test_tiles_cover_the_image_and_overlap(width: int, height: int) -> None:
    tiles = tile_grid(width, height, 640, 160)
    assert _covered(tiles, width, height)
    for x1, y1, x2, y2 in tiles:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 <= 640 and y2 - y1 <= 640
    xs = sorted({t[0] for t in tiles})
    for a, b in itertools.pairwise(xs):
        assert (a + 640) - b >= 160  # neighbours overlap by at least the requested amount


def test_small_image_is_one_tile() -> None:
    assert tile_grid(500, 300, 640, 160) == [(0, 0, 500, 300)]


def test_bad_tiling_refused() -> None:
    with pytest.raises(ValueError, match="bad tiling"):
        tile_grid(100, 100, 64, 64)


def test_shift_moves_box_and_polygon() -> None:
    det = RawDetection("plate", 0.5, (1, 2, 3, 4), ((1, 2), (3, 2), (3, 4), (1, 4)))
    moved = shift(det, 10, 20)
    assert moved.box == (11, 22, 13, 24)
    assert moved.polygon == ((11, 22), (13, 22), (13, 24), (11, 24))
    assert shift(RawDetection("face", 0.5, (0, 0, 1, 1)), 1, 1).polygon is None


def test_merge_suppresses_duplicates_and_grows_the_kept_box() -> None:
    full = RawDetection("plate", 0.9, (100, 100, 200, 140))
    duplicate = RawDetection("plate", 0.8, (102, 101, 201, 141))
    other = RawDetection("plate", 0.3, (400, 100, 500, 140))
    merged = merge([other, duplicate, full], iou=0.45)
    assert [d.score for d in merged] == [0.9, 0.3]
    assert merged[0].box == (100, 100, 201, 141)  # covers both copies
    assert merged[1] == other
    # Half a plate scoring higher than the whole one: one detection, covering the whole plate.
    half = RawDetection("plate", 0.95, (100, 100, 150, 140), ((100, 100), (150, 100), (150, 140), (100, 140)))
    merged = merge([half, full], iou=0.45)
    assert len(merged) == 1 and merged[0].box == (100, 100, 200, 140) and merged[0].score == 0.95
    assert merged[0].polygon == half.polygon
    # A box mostly inside a better-scoring one goes, even when IoU is low.
    assert merge([full, RawDetection("plate", 0.5, (110, 105, 150, 135))], iou=0.45) == [full]
    assert merge([], iou=0.45) == []


def test_cut_by_tile_only_on_inner_edges() -> None:
    # A tile at the image's left/top edge: touching those edges is fine, touching the inner right edge is not.
    tile = (0, 0, 640, 640)
    assert not cut_by_tile((0, 0, 50, 20), tile, 1280, 720)
    assert cut_by_tile((600, 10, 640, 30), tile, 1280, 720)
    inner = (320, 80, 960, 720)
    assert cut_by_tile((0, 100, 50, 120), inner, 1280, 720)
    assert not cut_by_tile((100, 600, 150, 640), inner, 1280, 720)  # bottom edge is the image's


def test_detect_tiled_returns_image_pixels() -> None:
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    image[300:320, 1000:1100] = 255
    seen: list[tuple[int, ...]] = []

    def fake(crop: npt.NDArray[np.uint8]) -> list[RawDetection]:
        seen.append(crop.shape)
        ys, xs = np.nonzero(crop[:, :, 0])
        if not len(xs):
            return []
        return [
            RawDetection("plate", 0.9, (float(xs.min()), float(ys.min()), xs.max() + 1.0, ys.max() + 1.0))
        ]

    tiles = tile_grid(1280, 720, 640, 160)
    found = detect_tiled(image, fake, tiles)
    assert len(seen) == len(tiles)
    assert found and all(d.box == (1000.0, 300.0, 1100.0, 320.0) for d in found)
    assert merge(found, iou=0.45) == [found[0]]
