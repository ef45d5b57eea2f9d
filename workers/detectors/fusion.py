"""Several detectors for one class, fused: the union of what each found, one region per object.

Each source runs at its own threshold (the caller's business); here, a detection of a later source that
overlaps one already kept (IoU at least ``Match.iou``, or at least ``Match.inside`` of either box inside
the other) is the same object: the kept one grows to the box covering both (the sources disagree on
extent: blur what either says), keeps the better score, and records both sources. What overlaps nothing is
kept as found by its source alone. A plate's text comes from whichever source read it (the best read).

Pure: no models, no I/O; see docs/accuracy.md for the measured recall and false positives of each union.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from shared.jobs import plate_key
from workers.detectors.base import BoxF, RawDetection


@dataclass(frozen=True)
class Match:
    """When two sources' boxes are one object: IoU >= ``iou``, or >= ``inside`` of one inside the other."""

    iou: float
    inside: float


# Faces: a second face source's box differs in extent (RetinaFace's include more forehead), rarely in place;
# 0.3 keeps neighbours in a crowd apart.
FACE_MATCH = Match(iou=0.3, inside=0.7)
# Plates: a text line lies inside its plate (a small box in a large one: low IoU), so text found on a plate
# another source has is the same plate (the rule of workers.detectors.plate_text.on_known).
PLATE_MATCH = Match(iou=0.1, inside=0.7)


def overlap(a: BoxF, b: BoxF) -> tuple[float, float]:
    """(IoU, share of the smaller box inside the other)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0, 0.0
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    smaller = min(area_a, area_b)
    return (inter / union if union > 0 else 0.0), (inter / smaller if smaller > 0 else 0.0)


def same_object(a: BoxF, b: BoxF, match: Match) -> bool:
    iou, inside = overlap(a, b)
    return iou >= match.iou or inside >= match.inside


def covering(a: BoxF, b: BoxF) -> BoxF:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def sources_of(det: RawDetection, default: str) -> tuple[str, ...]:
    return det.sources or (default,)


def combined(kept: RawDetection, other: RawDetection, box: BoxF | None = None) -> RawDetection:
    """``kept`` grown to cover ``other`` (or to ``box``): the better score, both sources (in order), the
    better read text, ``kept``'s polygon (else ``other``'s)."""
    sources = tuple(dict.fromkeys((*kept.sources, *other.sources)))
    text, text_score = kept.text, kept.text_score
    if other.text is not None and (text_score is None or (other.text_score or 0.0) > text_score):
        text, text_score = other.text, other.text_score
    return replace(
        kept,
        score=max(kept.score, other.score),
        box=box if box is not None else covering(kept.box, other.box),
        polygon=kept.polygon if kept.polygon is not None else other.polygon,
        text=text,
        text_score=text_score,
        sources=sources,
    )


def fuse(sources: Sequence[tuple[str, Iterable[RawDetection]]], match: Match) -> list[RawDetection]:
    """The union of the ``(name, detections)`` sources, each detection tagged with the sources that found
    it; a later source's detection on an earlier one's is merged into it (the best-overlapping one)."""
    fused: list[RawDetection] = []
    for name, found in sources:
        for det in found:
            det = replace(det, sources=sources_of(det, name))
            best, best_iou = -1, -1.0
            for index, kept in enumerate(fused):
                iou, inside = overlap(det.box, kept.box)
                if (iou >= match.iou or inside >= match.inside) and iou + inside > best_iou:
                    best, best_iou = index, iou + inside
            if best < 0:
                fused.append(det)
            else:
                fused[best] = combined(fused[best], det)
    return fused


# -- skipping plates by their text (the skip_regexp option) ----------------------------------------------


def skip_matching(
    detections: Sequence[RawDetection], patterns: Sequence[re.Pattern[str]]
) -> list[RawDetection]:
    """``detections`` with each plate whose read text fully matches one of ``patterns`` (as
    :func:`plate_key` writes it) marked ``skipped``. A plate whose text was not read is never skipped."""
    if not patterns:
        return list(detections)
    out: list[RawDetection] = []
    for det in detections:
        key = plate_key(det.text) if det.label == "plate" and det.text else ""
        if key and any(pattern.fullmatch(key) for pattern in patterns):
            det = replace(det, skipped=True)
        out.append(det)
    return out
