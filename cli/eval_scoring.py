"""``veil eval``'s scoring: the service's job records against the labels, with :mod:`cli.metrics`.

``curve`` computes a threshold curve client-side from one run's scores (run it with a low ``--min-score``):
a detection scoring >= t is exactly what a run at ``min_score=t`` returns, because the worker's NMS keeps
the same boxes above any threshold.
"""

from __future__ import annotations

from typing import Any

from cli import metrics
from cli.metrics import Box, ImageResult, Prediction


def prediction(job: dict[str, Any], label: str) -> Prediction:
    """What a job record says about one class (``plate`` or ``face``): its detections and blurred regions."""
    dets = [d for d in job.get("detections", []) if d.get("class") == label]
    boxes: list[Box] = [
        (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in (d["box"] for d in dets)
    ]
    regions = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in job.get("blurred_regions", [])]
    return Prediction(boxes=boxes, scores=[float(d["score"]) for d in dets], regions=regions)


def score_all(entries: list[dict[str, Any]], predictions: list[Prediction], kind: str) -> list[ImageResult]:
    """Each labelled image scored against its prediction."""
    return [
        metrics.score_image(
            entry["file"],
            metrics.subset_of(entry, kind),
            kind,
            entry["boxes"],
            found,
            int(entry["width"]),
            int(entry["height"]),
        )
        for entry, found in zip(entries, predictions, strict=True)
    ]


def curve(
    entries: list[dict[str, Any]], predictions: list[Prediction], kind: str, thresholds: list[float]
) -> list[dict[str, Any]]:
    """The summary at each threshold, as a run at ``min_score`` = that threshold would have scored."""
    rows = []
    for t in thresholds:
        at_t = score_all(entries, [metrics.at_threshold(p, t) for p in predictions], kind)
        rows.append({"threshold": t, **metrics.summarize(at_t).as_dict()})
    return rows
