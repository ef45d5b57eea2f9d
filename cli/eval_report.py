"""``veil eval``'s report: one run's figures as tables for a person, or as one JSON object (``--json``)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from cli.metrics import Miss, Summary

_HEAD = f"{'det_recall@0.3':>14} {'anon_recall':>11} {'fp_per_image':>12}"


@dataclass
class Outcome:
    """What one ``veil eval`` run found."""

    labels: Path
    kind: str
    url: str
    min_score: float | None
    concurrency: int
    images: int
    overall: Summary
    subsets: dict[str, Summary]
    misses: list[Miss]
    failed: list[tuple[str, Any]]  # (file, the job's error)
    curve: list[dict[str, Any]]
    wall_seconds: float
    # Median worker ms per detection stage (detect_faces / detect_plates) and, where a class has several
    # sources, per source (source.centerface, source.retinaface, source.platedet, source.text).
    detector_ms: dict[str, float] = field(default_factory=dict)


DETECTOR_TIMINGS = ("detect_faces", "detect_plates")
SOURCE_TIMING = "source."  # workers.detection.SOURCE_TIMING (cli does not import workers)


def detector_medians(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each detection timing over the jobs that have it."""
    values: dict[str, list[float]] = {}
    for job in jobs:
        for name, ms in (job.get("timings_ms") or {}).items():
            if (name in DETECTOR_TIMINGS or name.startswith(SOURCE_TIMING)) and isinstance(ms, int | float):
                values.setdefault(name, []).append(float(ms))
    return {name: round(statistics.median(v), 1) for name, v in sorted(values.items())}


def as_json(outcome: Outcome) -> dict[str, Any]:
    wall = outcome.wall_seconds
    return {
        "labels": str(outcome.labels),
        "targets": outcome.kind,
        "min_score": outcome.min_score,
        "overall": outcome.overall.as_dict(),
        "subsets": {name: s.as_dict() for name, s in outcome.subsets.items()},
        "misses": [asdict(m) for m in outcome.misses],
        "failed": [{"file": f, "error": e} for f, e in outcome.failed],
        "curve": outcome.curve,
        "wall_seconds": round(wall, 2),
        "images_per_second": round(outcome.images / wall, 3) if wall > 0 else None,
        "detector_ms_p50": outcome.detector_ms,
    }


def _fmt_row(name: str, s: Summary) -> str:
    recalls = f"{s.det_recall:>14.4f} {s.anon_recall:>11.4f}"
    return f"{name:<10} {s.images:>6} {s.boxes:>6} {recalls} {s.fp_per_image:>12.4f}"


def table(overall: Summary, subsets: dict[str, Summary]) -> str:
    lines = [f"{'subset':<10} {'images':>6} {'boxes':>6} {_HEAD}"]
    lines.append(_fmt_row("all", overall))
    lines.extend(_fmt_row(name, s) for name, s in subsets.items())
    return "\n".join(lines)


def print_text(outcome: Outcome) -> None:
    o = outcome
    min_score = "default" if o.min_score is None else o.min_score
    click.echo(f"{o.kind}: {o.images} images via {o.url} (min_score {min_score})")
    click.echo(table(o.overall, o.subsets))
    click.echo(
        f"\nwall {o.wall_seconds:.1f}s, {o.images / o.wall_seconds:.2f} img/s (concurrency {o.concurrency})"
    )
    if o.detector_ms:
        click.echo("worker ms p50: " + ", ".join(f"{name} {ms:g}" for name, ms in o.detector_ms.items()))
    if o.failed:
        click.echo(f"\n{len(o.failed)} jobs failed:")
        for file, error in o.failed:
            click.echo(f"  {file}: {error}")
    if o.curve:
        click.echo("\nthreshold curve (client-side from this run's scores):")
        click.echo(f"{'min_score':>9} {_HEAD}")
        for row in o.curve:
            click.echo(
                f"{row['threshold']:>9.3f} {row['det_recall@0.3']:>14.4f}"
                f" {row['anon_recall']:>11.4f} {row['fp_per_image']:>12.4f}"
            )
    click.echo(f"\n{len(o.misses)} misses:")
    for m in o.misses:
        what = "not detected" if not m.detected else "detected"
        click.echo(
            f"  {m.file} [{m.subset}] box {m.box}: {what}, best IoU {m.best_iou:.2f}, covered {m.covered:.0%}"
        )
