"""Detection-quality metrics, exactly as defined in ``../shared/eval/README.md``. Pure Python and numpy.

- **det_recall@0.3**: share of labelled boxes matched by a detection with IoU >= 0.3 (one-to-one, greedy by
  IoU: a detection matches at most one labelled box).
- **anon_recall**: share of labelled boxes of which >= 80 % of the area lies inside the union of the regions
  actually blurred.
- **fp_per_image**: detections overlapping no labelled box (IoU < 0.1), per image.
- Faces narrower than 10 px are "don't care": not counted for recall, and a detection on them is no error.

Boxes are ``[x1, y1, x2, y2]`` in pixels with x2/y2 exclusive (area = (x2 - x1) * (y2 - y1)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]

MATCH_IOU = 0.3
FP_IOU = 0.1
COVER_RATIO = 0.8
DONT_CARE_WIDTH = 10


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match(
    labels: Sequence[Sequence[float]], detections: Sequence[Sequence[float]], threshold: float
) -> list[int | None]:
    """For each labelled box, the index of the detection matched to it (IoU >= threshold) or None.

    Greedy one-to-one: the pair with the highest IoU is matched first, then the next among the rest.
    """
    pairs = sorted(
        ((iou(lab, det), li, di) for li, lab in enumerate(labels) for di, det in enumerate(detections)),
        key=lambda p: -p[0],
    )
    result: list[int | None] = [None] * len(labels)
    used: set[int] = set()
    for value, li, di in pairs:
        if value < threshold:
            break
        if result[li] is None and di not in used:
            result[li] = di
            used.add(di)
    return result


def covered_fraction(
    box: Sequence[float], regions: Iterable[Sequence[int]], width: int, height: int
) -> float:
    """The share of ``box``'s area inside the union of ``regions`` (rectangles, x2/y2 exclusive)."""
    bx1, by1, bx2, by2 = (round(float(v)) for v in box[:4])
    full = (bx2 - bx1) * (by2 - by1)
    if full <= 0:
        return 0.0
    x1, y1, x2, y2 = max(0, bx1), max(0, by1), min(width, bx2), min(height, by2)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    mask = np.zeros((y2 - y1, x2 - x1), dtype=bool)
    for region in regions:
        rx1, ry1, rx2, ry2 = (int(v) for v in region[:4])
        ax1, ay1 = max(rx1, x1) - x1, max(ry1, y1) - y1
        ax2, ay2 = min(rx2, x2) - x1, min(ry2, y2) - y1
        if ax2 > ax1 and ay2 > ay1:
            mask[ay1:ay2, ax1:ax2] = True
    return float(mask.sum()) / full


def is_dont_care(box: Sequence[float], kind: str) -> bool:
    return kind == "faces" and (box[2] - box[0]) < DONT_CARE_WIDTH


def subset_of(entry: Mapping[str, Any], kind: str) -> str:
    """Plates: the ``country``; faces: ``dlib`` or ``masked`` from the ``subset`` key."""
    if kind == "plates":
        return str(entry.get("country") or "all")
    subset = str(entry.get("subset") or "all")
    if subset.startswith("dlib"):
        return "dlib"
    if "mask" in subset:
        return "masked"
    return subset


@dataclass(frozen=True)
class Prediction:
    """What the service returned for one image."""

    boxes: list[Box]  # detections of the evaluated class
    scores: list[float]
    regions: list[tuple[int, int, int, int]]  # blurred regions (all of them)


@dataclass
class Miss:
    file: str
    box: list[int]
    subset: str
    best_iou: float
    covered: float
    detected: bool  # matched at IoU >= 0.3
    anonymized: bool  # >= 80 % covered


@dataclass
class ImageResult:
    file: str
    subset: str
    counted: int  # labelled boxes that count for recall
    detected: int
    anonymized: int
    false_positives: int
    misses: list[Miss] = field(default_factory=list)


def score_image(
    file: str,
    subset: str,
    kind: str,
    labels: Sequence[Sequence[float]],
    prediction: Prediction,
    width: int,
    height: int,
) -> ImageResult:
    counted_idx = [i for i, box in enumerate(labels) if not is_dont_care(box, kind)]
    counted = [labels[i] for i in counted_idx]
    matched = match(counted, prediction.boxes, MATCH_IOU)
    result = ImageResult(
        file=file, subset=subset, counted=len(counted), detected=0, anonymized=0, false_positives=0
    )
    for box, det in zip(counted, matched, strict=True):
        cover = covered_fraction(box, prediction.regions, width, height)
        detected, anonymized = det is not None, cover >= COVER_RATIO
        result.detected += detected
        result.anonymized += anonymized
        if not (detected and anonymized):
            best = max((iou(box, d) for d in prediction.boxes), default=0.0)
            result.misses.append(
                Miss(
                    file, [int(v) for v in box], subset, round(best, 3), round(cover, 3), detected, anonymized
                )
            )
    for found in prediction.boxes:
        if all(iou(found, box) < FP_IOU for box in labels):  # don't-care boxes included: no error on them
            result.false_positives += 1
    return result


@dataclass(frozen=True)
class Summary:
    images: int
    boxes: int
    det_recall: float
    anon_recall: float
    fp_per_image: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "images": self.images,
            "boxes": self.boxes,
            "det_recall@0.3": round(self.det_recall, 4),
            "anon_recall": round(self.anon_recall, 4),
            "fp_per_image": round(self.fp_per_image, 4),
        }


def summarize(results: Sequence[ImageResult]) -> Summary:
    boxes = sum(r.counted for r in results)
    images = len(results)
    return Summary(
        images=images,
        boxes=boxes,
        det_recall=sum(r.detected for r in results) / boxes if boxes else 0.0,
        anon_recall=sum(r.anonymized for r in results) / boxes if boxes else 0.0,
        fp_per_image=sum(r.false_positives for r in results) / images if images else 0.0,
    )


def by_subset(results: Sequence[ImageResult]) -> dict[str, Summary]:
    groups: dict[str, list[ImageResult]] = {}
    for r in results:
        groups.setdefault(r.subset, []).append(r)
    return {name: summarize(group) for name, group in sorted(groups.items())}


def regions_at(
    prediction: Prediction, all_scores: Sequence[float], all_boxes: Sequence[Box], threshold: float
) -> list[tuple[int, int, int, int]]:
    """The blurred regions that remain when only detections scoring >= ``threshold`` are kept.

    Each region is attributed to the highest-scoring detection box it contains (regions are grown from
    detection boxes); a region containing no detection box is always kept.
    """
    kept: list[tuple[int, int, int, int]] = []
    for region in prediction.regions:
        owners = [
            s
            for s, b in zip(all_scores, all_boxes, strict=True)
            if b[0] >= region[0] - 1
            and b[1] >= region[1] - 1
            and b[2] <= region[2] + 1
            and b[3] <= region[3] + 1
        ]
        if not owners or max(owners) >= threshold:
            kept.append(region)
    return kept


def at_threshold(prediction: Prediction, threshold: float) -> Prediction:
    """The prediction as a run at ``min_score=threshold`` would have returned it (see :func:`regions_at`)."""
    keep = [i for i, s in enumerate(prediction.scores) if s >= threshold]
    return Prediction(
        boxes=[prediction.boxes[i] for i in keep],
        scores=[prediction.scores[i] for i in keep],
        regions=regions_at(prediction, prediction.scores, prediction.boxes, threshold),
    )
