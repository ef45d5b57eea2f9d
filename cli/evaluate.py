"""``veil eval``: send a labelled photo set through the running service's HTTP API and measure recall.

Every image takes the path users take (``POST /v1/jobs``, poll ``GET /v1/jobs/{id}``); the job's
``detections`` and ``blurred_regions`` are scored with :mod:`cli.metrics` (definitions in
``../shared/eval/README.md``). ``--curve`` computes a threshold curve client-side from one run's scores
(run it with a low ``--min-score``): a detection scoring >= t is exactly what a run at ``min_score=t``
returns, because the worker's NMS keeps the same boxes above any threshold.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cli import metrics
from cli.metrics import Box, ImageResult, Prediction, Summary

DEFAULT_URL = "http://127.0.0.1:8080"
POLL_SECONDS = 0.05


class EvalError(click.ClickException):
    pass


def infer_kind(entries: Sequence[dict[str, Any]]) -> str:
    """``plates`` or ``faces``, from the labels' informational keys."""
    keys = set().union(*(entry.keys() for entry in entries)) if entries else set()
    if {"country", "plate_texts"} & keys:
        return "plates"
    if {"subset", "classes"} & keys:
        return "faces"
    raise EvalError("cannot tell whether the labels are plates or faces; pass --targets")


def _load_labels(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read labels {path}: {exc}") from exc
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and "file" in e and "boxes" in e for e in entries
    ):
        raise EvalError(f"{path}: expected a JSON list of objects with 'file' and 'boxes'")
    return entries


def _api_key(data_dir: Path, given: str | None) -> str:
    if given:
        return given
    from cli.stack import read_stack_file

    if not read_stack_file(data_dir):
        raise EvalError("no API key: pass --api-key or set VEIL_API_KEY (or run `veil up` in --data-dir)")
    from cli.main import _with_key_store, settings_for_cli

    token, _key = _with_key_store(settings_for_cli(data_dir), lambda store: store.create("veil-eval"))
    return token


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = round(width * self.done / self.total) if self.total else width
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {rate:.2f} img/s"
        )
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def _run_jobs(
    url: str,
    api_key: str,
    files: list[Path],
    form_options: dict[str, str],
    concurrency: int,
    job_timeout: float,
    progress: _Progress,
) -> list[dict[str, Any]]:
    import aiohttp

    headers = {"X-API-Key": api_key}
    semaphore = asyncio.Semaphore(concurrency)

    async def one(http: aiohttp.ClientSession, path: Path) -> dict[str, Any]:
        async with semaphore:
            form = aiohttp.FormData()
            form.add_field("image", await asyncio.to_thread(path.read_bytes), filename=path.name)
            for name, value in form_options.items():
                form.add_field(name, value)
            async with http.post(f"{url}/v1/jobs", data=form, headers=headers) as response:
                created = await response.json(content_type=None)
                if response.status != 202:
                    raise EvalError(f"{path.name}: HTTP {response.status}: {created}")
            deadline = time.monotonic() + job_timeout
            while True:
                async with http.get(f"{url}/v1/jobs/{created['id']}", headers=headers) as response:
                    job: dict[str, Any] = await response.json(content_type=None)
                    if response.status != 200:
                        raise EvalError(f"{path.name}: HTTP {response.status}: {job}")
                if job["status"] in ("succeeded", "failed"):
                    progress.step()
                    return job
                if time.monotonic() > deadline:
                    raise EvalError(f"{path.name}: job {created['id']} not finished after {job_timeout:g}s")
                await asyncio.sleep(POLL_SECONDS)

    connector = aiohttp.TCPConnector(limit=max(4, concurrency * 2))
    async with aiohttp.ClientSession(connector=connector) as http:
        return list(await asyncio.gather(*(one(http, f) for f in files)))


def _prediction(job: dict[str, Any], label: str) -> Prediction:
    dets = [d for d in job.get("detections", []) if d.get("class") == label]
    boxes: list[Box] = [
        (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in (d["box"] for d in dets)
    ]
    regions = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in job.get("blurred_regions", [])]
    return Prediction(boxes=boxes, scores=[float(d["score"]) for d in dets], regions=regions)


def _score_all(
    entries: list[dict[str, Any]], predictions: list[Prediction], sizes: list[tuple[int, int]], kind: str
) -> list[ImageResult]:
    return [
        metrics.score_image(
            entry["file"], metrics.subset_of(entry, kind), kind, entry["boxes"], prediction, width, height
        )
        for entry, prediction, (width, height) in zip(entries, predictions, sizes, strict=True)
    ]


def _save_misses(
    directory: Path, images_dir: Path, results: list[ImageResult], jobs: dict[str, dict[str, Any]], label: str
) -> int:
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


def _fmt_row(name: str, s: Summary) -> str:
    recalls = f"{s.det_recall:>14.4f} {s.anon_recall:>11.4f}"
    return f"{name:<10} {s.images:>6} {s.boxes:>6} {recalls} {s.fp_per_image:>12.4f}"


def _table(overall: Summary, subsets: dict[str, Summary]) -> str:
    head = f"{'det_recall@0.3':>14} {'anon_recall':>11} {'fp_per_image':>12}"
    lines = [f"{'subset':<10} {'images':>6} {'boxes':>6} {head}"]
    lines.append(_fmt_row("all", overall))
    lines.extend(_fmt_row(name, s) for name, s in subsets.items())
    return "\n".join(lines)


def parse_thresholds(text: str) -> list[float]:
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from exc
    if not values or not all(0 <= v <= 1 for v in values):
        raise click.BadParameter("thresholds must lie in 0..1")
    return values


@click.command("eval")
@click.option(
    "--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of the images (default: 'images' beside the labels).",
)
@click.option(
    "--url",
    default=None,
    help=f"Gateway URL (default: the `veil up` stack in --data-dir, else {DEFAULT_URL}).",
)
@click.option("--api-key", envvar="VEIL_API_KEY", default=None, help="API key (env VEIL_API_KEY).")
@click.option(
    "--targets",
    type=click.Choice(["faces", "plates"]),
    default=None,
    help="What the labels are (default: guessed from their keys); only that target is requested.",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=None,
    help="Passed to the API (default: the service's).",
)
@click.option("--concurrency", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for one job.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option(
    "--curve", default=None, help="Comma-separated thresholds: the recall/false-positive curve, client-side."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--save-misses",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write each image with a miss: missed labelled boxes red, blurred regions green.",
)
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.pass_obj
def evaluate(
    data_dir: Path | None,
    labels_path: Path,
    images_dir: Path | None,
    url: str | None,
    api_key: str | None,
    targets: str | None,
    min_score: float | None,
    concurrency: int,
    timeout: float,
    limit: int | None,
    curve: str | None,
    as_json: bool,
    save_misses: Path | None,
    quiet: bool,
) -> None:
    """Measure det_recall@0.3, anon_recall and fp_per_image of the running service on a labelled set."""
    from cli.stack import read_stack_file

    data_dir = data_dir if data_dir is not None else Path(".veil")
    entries = _load_labels(labels_path)
    if limit is not None:
        entries = entries[:limit]
    kind = targets or infer_kind(entries)
    label = "plate" if kind == "plates" else "face"
    images_dir = images_dir if images_dir is not None else labels_path.parent / "images"
    files = [images_dir / entry["file"] for entry in entries]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise EvalError(
            f"{len(missing)} labelled images are missing from {images_dir}: {', '.join(missing[:5])}"
        )
    thresholds = parse_thresholds(curve) if curve else []
    url = (url or read_stack_file(data_dir).get("url") or DEFAULT_URL).rstrip("/")
    token = _api_key(data_dir, api_key or os.environ.get("VEIL_API_KEY"))

    form_options = {"targets": kind}
    if min_score is not None:
        form_options["min_score"] = f"{min_score:g}"
    progress = _Progress(len(files), enabled=not quiet)
    start = time.perf_counter()
    try:
        jobs = asyncio.run(_run_jobs(url, token, files, form_options, concurrency, timeout, progress))
    except OSError as exc:
        raise EvalError(f"cannot reach the service at {url}: {exc}") from exc
    wall = time.perf_counter() - start
    failed = [
        (e["file"], j.get("error")) for e, j in zip(entries, jobs, strict=True) if j["status"] != "succeeded"
    ]
    predictions = [_prediction(job, label) for job in jobs]
    sizes = [(int(e["width"]), int(e["height"])) for e in entries]
    results = _score_all(entries, predictions, sizes, kind)
    overall, subsets = metrics.summarize(results), metrics.by_subset(results)
    misses = [m for r in results for m in r.misses]
    curve_rows = []
    for t in thresholds:
        at_t = _score_all(entries, [metrics.at_threshold(p, t) for p in predictions], sizes, kind)
        curve_rows.append({"threshold": t, **metrics.summarize(at_t).as_dict()})
    saved = 0
    if save_misses is not None:
        saved = _save_misses(
            save_misses,
            images_dir,
            results,
            {e["file"]: j for e, j in zip(entries, jobs, strict=True)},
            label,
        )

    if as_json:
        out = {
            "labels": str(labels_path),
            "targets": kind,
            "min_score": min_score,
            "overall": overall.as_dict(),
            "subsets": {name: s.as_dict() for name, s in subsets.items()},
            "misses": [asdict(m) for m in misses],
            "failed": [{"file": f, "error": e} for f, e in failed],
            "curve": curve_rows,
            "wall_seconds": round(wall, 2),
            "images_per_second": round(len(files) / wall, 3) if wall > 0 else None,
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        f"{kind}: {len(files)} images via {url} (min_score {'default' if min_score is None else min_score})"
    )
    click.echo(_table(overall, subsets))
    click.echo(f"\nwall {wall:.1f}s, {len(files) / wall:.2f} img/s (concurrency {concurrency})")
    if failed:
        click.echo(f"\n{len(failed)} jobs failed:")
        for file, error in failed:
            click.echo(f"  {file}: {error}")
    if curve_rows:
        click.echo("\nthreshold curve (client-side from this run's scores):")
        click.echo(f"{'min_score':>9} {'det_recall@0.3':>14} {'anon_recall':>11} {'fp_per_image':>12}")
        for row in curve_rows:
            click.echo(
                f"{row['threshold']:>9.3f} {row['det_recall@0.3']:>14.4f}"
                f" {row['anon_recall']:>11.4f} {row['fp_per_image']:>12.4f}"
            )
    click.echo(f"\n{len(misses)} misses:")
    for m in misses:
        what = "not detected" if not m.detected else "detected"
        click.echo(
            f"  {m.file} [{m.subset}] box {m.box}: {what}, best IoU {m.best_iou:.2f}, covered {m.covered:.0%}"
        )
    if save_misses is not None:
        click.echo(f"\n{saved} images with misses drawn in {save_misses}")
