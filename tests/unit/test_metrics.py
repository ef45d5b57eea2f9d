"""The evaluation metrics on hand-made boxes (definitions in ../shared/eval/README.md)."""

from __future__ import annotations

import pytest

from cli import metrics
from cli.metrics import Prediction


def test_iou() -> None:
    assert metrics.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert metrics.iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert metrics.iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert metrics.iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0


def test_match_is_one_to_one_best_first() -> None:
    labels = [(0, 0, 10, 10), (2, 0, 12, 10)]
    # One detection overlapping both: it goes to the better match, the other label stays unmatched.
    assert metrics.match(labels, [(2, 0, 12, 10)], 0.3) == [None, 0]
    assert metrics.match(labels, [(2, 0, 12, 10), (0, 0, 10, 10)], 0.3) == [1, 0]
    assert metrics.match(labels, [(100, 100, 110, 110)], 0.3) == [None, None]


def test_covered_fraction_uses_the_union_of_regions() -> None:
    box = (0, 0, 10, 10)
    assert metrics.covered_fraction(box, [(0, 0, 5, 10)], 100, 100) == 0.5
    # Overlapping regions are not counted twice.
    assert metrics.covered_fraction(box, [(0, 0, 5, 10), (3, 0, 8, 10)], 100, 100) == 0.8
    assert metrics.covered_fraction(box, [(0, 0, 5, 10), (5, 0, 10, 10)], 100, 100) == 1.0
    assert metrics.covered_fraction(box, [], 100, 100) == 0.0
    # Part of a box outside the image can never be blurred.
    assert metrics.covered_fraction((90, 0, 110, 10), [(0, 0, 100, 100)], 100, 100) == 0.5


def test_detected_but_not_anonymized() -> None:
    labels = [(0, 0, 100, 20)]  # a plate
    # The detection matches (IoU 0.75) but the blurred region leaves its last quarter visible.
    prediction = Prediction(boxes=[(0, 0, 75, 20)], scores=[0.9], regions=[(0, 0, 75, 20)])
    result = metrics.score_image("a.jpg", "eu", "plates", labels, prediction, 200, 100)
    assert (result.counted, result.detected, result.anonymized, result.false_positives) == (1, 1, 0, 0)
    assert result.misses[0].covered == 0.75 and result.misses[0].detected


def test_anonymized_but_not_detected() -> None:
    labels = [(10, 10, 30, 30)]
    # A huge detection blurs the face but does not match it at IoU 0.3 (and overlaps it, so no FP either).
    prediction = Prediction(boxes=[(0, 0, 100, 100)], scores=[0.9], regions=[(0, 0, 100, 100)])
    result = metrics.score_image("a.jpg", "dlib", "faces", labels, prediction, 100, 100)
    assert (result.detected, result.anonymized, result.false_positives) == (0, 1, 1)


def test_false_positives_need_iou_below_0_1_with_every_label() -> None:
    labels = [(0, 0, 10, 10)]
    boxes: list[metrics.Box] = [
        (0, 0, 10, 10),
        (8, 8, 30, 30),
        (50, 50, 60, 60),
    ]  # match, IoU 4/580 < 0.1, far away
    prediction = Prediction(boxes=boxes, scores=[0.9, 0.8, 0.7], regions=[])
    result = metrics.score_image("a.jpg", "us", "plates", labels, prediction, 100, 100)
    assert result.false_positives == 2
    assert result.detected == 1


def test_small_faces_are_dont_care() -> None:
    labels = [(0, 0, 9, 9), (20, 20, 40, 40)]
    # A detection on the 9 px face is no error, and missing it is no miss.
    prediction = Prediction(boxes=[(0, 0, 9, 9)], scores=[0.9], regions=[(0, 0, 9, 9)])
    result = metrics.score_image("a.jpg", "masked", "faces", labels, prediction, 100, 100)
    assert (result.counted, result.detected, result.false_positives) == (1, 0, 0)
    # Plates have no don't-care size.
    result = metrics.score_image("a.jpg", "us", "plates", labels, prediction, 100, 100)
    assert (result.counted, result.detected) == (2, 1)


def test_summary_and_subsets() -> None:
    labels = [(0, 0, 10, 10)]
    hit = Prediction(boxes=[(0, 0, 10, 10)], scores=[0.9], regions=[(0, 0, 10, 10)])
    miss = Prediction(boxes=[(50, 50, 60, 60)], scores=[0.9], regions=[(50, 50, 60, 60)])
    results = [
        metrics.score_image("a", "us", "plates", labels, hit, 100, 100),
        metrics.score_image("b", "us", "plates", labels, miss, 100, 100),
        metrics.score_image("c", "eu", "plates", labels, hit, 100, 100),
    ]
    overall = metrics.summarize(results)
    assert (overall.images, overall.boxes) == (3, 3)
    assert overall.det_recall == pytest.approx(2 / 3)
    assert overall.anon_recall == pytest.approx(2 / 3)
    assert overall.fp_per_image == pytest.approx(1 / 3)
    subsets = metrics.by_subset(results)
    assert list(subsets) == ["eu", "us"]
    assert subsets["us"].det_recall == 0.5 and subsets["eu"].det_recall == 1.0


def test_subset_names() -> None:
    assert metrics.subset_of({"country": "br"}, "plates") == "br"
    assert metrics.subset_of({"subset": "dlib_testing"}, "faces") == "dlib"
    assert metrics.subset_of({"subset": "kaggle_face_mask_detection"}, "faces") == "masked"


def test_curve_from_one_low_threshold_run() -> None:
    prediction = Prediction(
        boxes=[(0, 0, 10, 10), (50, 50, 60, 60)],
        scores=[0.9, 0.2],
        regions=[(0, 0, 12, 12), (48, 48, 62, 62), (80, 80, 90, 90)],  # last: no detection inside
    )
    high = metrics.at_threshold(prediction, 0.5)
    assert high.boxes == [(0, 0, 10, 10)] and high.scores == [0.9]
    assert high.regions == [(0, 0, 12, 12), (80, 80, 90, 90)]
    assert metrics.at_threshold(prediction, 0.1) == prediction
