"""``veil eval --save-misses``: each image with a miss, drawn: missed labelled boxes red, blurred regions
green, with the scores of the evaluated class's detections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli.metrics import ImageResult


def save_misses(
    directory: Path, images_dir: Path, results: list[ImageResult], jobs: dict[str, dict[str, Any]], label: str
) -> int:
    """Write ``<stem>.miss.png`` into ``directory`` for every result with a miss; how many were written."""
    import cv2

    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for result in results:
        if not result.misses:
            continue
        image = cv2.imread(str(images_dir / result.file), cv2.IMREAD_COLOR)
        if image is None:
            continue
        job = jobs[result.file]
        for x1, y1, x2, y2 in job.get("blurred_regions", []):
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 0), 2)
        for det in job.get("detections", []):
            if det.get("class") == label:
                x1, y1, x2, y2 = det["box"]
                cv2.putText(
                    image,
                    f"{det['score']:.2f}",
                    (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.5,
                    (0, 200, 0),
                    1,
                    cv2.LINE_AA,
                )
        for miss in result.misses:
            x1, y1, x2, y2 = miss.box
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 255), 2)
        stem = Path(result.file).stem
        cv2.imwrite(str(directory / f"{stem}.miss.png"), image)
        written += 1
    return written
