from __future__ import annotations

import numpy as np
import pytest

from workers.detection import plate_cover
from workers.detectors.base import RawDetection, nms
from workers.imageops import regions_from_boxes, union_area


def test_padding_grows_each_side_by_ratio_of_size() -> None:
    (region,) = regions_from_boxes([(100, 100, 200, 150)], padding=0.1, shrink=0.0, width=1000, height=1000)
    assert region == (90, 95, 210, 155)


def test_shrink_after_padding() -> None:
    (region,) = regions_from_boxes([(100, 100, 200, 150)], padding=0.2, shrink=0.1, width=1000, height=1000)
    assert region == (90, 95, 210, 155)
    (tight,) = regions_from_boxes([(100, 100, 200, 150)], padding=0.0, shrink=0.25, width=1000, height=1000)
    assert tight == (125, 112, 175, 138)  # rounded outwards: 112.5 -> 112, 137.5 -> 138


def test_fractional_boxes_round_outwards() -> None:
    (region,) = regions_from_boxes([(10.2, 20.7, 30.1, 40.01)], padding=0, shrink=0, width=100, height=100)
    assert region == (10, 20, 31, 41)


def test_clipped_to_image() -> None:
    (region,) = regions_from_boxes([(-5, -5, 50, 40)], padding=0.5, shrink=0, width=60, height=45)
    assert region == (0, 0, 60, 45)


def test_empty_and_outside_boxes_dropped() -> None:
    boxes = [(10, 10, 10, 20), (10, 10, 20, 5), (200, 200, 250, 250), (float("nan"), 0, 5, 5)]
    assert regions_from_boxes(boxes, padding=0.1, shrink=0, width=100, height=100) == []


def test_order_preserved() -> None:
    boxes = [(50, 50, 60, 60), (0, 0, 10, 10)]
    assert regions_from_boxes(boxes, padding=0, shrink=0, width=100, height=100) == [
        (50, 50, 60, 60),
        (0, 0, 10, 10),
    ]


def test_union_area_counts_overlap_once() -> None:
    assert union_area([(0, 0, 10, 10), (5, 5, 15, 15)], 100, 100) == 100 + 100 - 25
    assert union_area([(90, 90, 120, 120)], 100, 100) == 100


def test_plate_cover_unions_polygon_and_box() -> None:
    det = RawDetection("plate", 0.9, (10, 10, 50, 30), ((8, 12), (50, 9), (52, 29), (10, 31)))
    assert plate_cover(det) == (8, 9, 52, 31)
    no_polygon = RawDetection("plate", 0.9, (10, 10, 50, 30), None)
    assert plate_cover(no_polygon) == (10, 10, 50, 30)


def test_nms_keeps_best_of_overlapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.4], dtype=np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]
    # At a high threshold the moderately overlapping box survives.
    assert nms(boxes, scores, 0.7).tolist() == [1, 2, 0]


def test_nms_empty_and_mismatch() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []
    with pytest.raises(ValueError, match="scores"):
        nms(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), 0.5)
