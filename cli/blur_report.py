"""The end of a ``veil blur`` run: the summary (failures with their error code, skipped non-images, what an
interruption left), the ``--json`` manifest of every file, and the exit status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.blur_run import Failure
from cli.blur_state import Finished

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass(frozen=True)
class Report:
    out: Path
    finished: list[Finished]  # earlier runs' and this one's
    earlier: int  # how many of them an earlier run finished
    failed: list[Failure]
    skipped: list[str]  # not images
    unsent: list[str]
    interrupted: bool

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or self.unsent else EXIT_OK


def summary(report: Report) -> list[str]:
    images = len(report.finished) + len(report.failed) + len(report.unsent)
    head = f"blurred {len(report.finished)} of {images} images into {report.out}"
    if report.earlier:
        head += f" ({report.earlier} by an earlier run)"
    lines = [f"{head}; {len(report.failed)} failed, skipped {len(report.skipped)} (not images)"]
    if report.failed:
        lines.append("failed:")
        lines += [f"  {f.code}  {f.rel}: {f.message}" for f in sorted(report.failed, key=lambda f: f.rel)]
    if report.skipped:
        lines.append("skipped (not JPEG, PNG or WebP):")
        lines += [f"  {rel}" for rel in report.skipped]
    if report.unsent:
        why = "interrupted" if report.interrupted else "stopped"
        lines.append(f"{why}: {len(report.unsent)} images not sent; run the same command again to resume")
    return lines


def manifest(report: Report, url: str) -> dict[str, Any]:
    """Every file under the paths given, by path: its result and detections, its error, or why not."""
    files: list[dict[str, Any]] = [
        {
            "path": f.rel,
            "status": "succeeded",
            "output": f.output,
            "job": f.job,
            "detections": f.detections,
            "blurred_regions": f.blurred_regions,
        }
        for f in report.finished
    ]
    files += [
        {"path": f.rel, "status": "failed", "error": {"code": f.code, "message": f.message}}
        for f in report.failed
    ]
    files += [{"path": rel, "status": "skipped", "reason": "not an image"} for rel in report.skipped]
    files += [{"path": rel, "status": "not_sent"} for rel in report.unsent]
    counts = {
        "succeeded": len(report.finished),
        "failed": len(report.failed),
        "skipped": len(report.skipped),
        "not_sent": len(report.unsent),
    }
    return {
        "url": url,
        "out": str(report.out),
        "counts": counts,
        "files": sorted(files, key=lambda f: str(f["path"])),
    }
