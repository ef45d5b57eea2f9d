"""``veil eval``: send a labelled photo set through the running service's HTTP API and measure recall.

The labelled set (:mod:`cli.eval_labels`) goes through the API the way users send photos
(:mod:`cli.eval_run`); the jobs' ``detections`` and ``blurred_regions`` are scored with :mod:`cli.metrics`
(definitions in ``../shared/eval/README.md``) by :mod:`cli.eval_scoring`, which also computes ``--curve``
client-side from one run's scores; :mod:`cli.eval_report` prints the result and :mod:`cli.eval_misses`
draws the misses.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import click

from cli import metrics
from cli.common import DEFAULT_DATA_DIR, api_key_option, api_key_or_new, stack_url
from cli.eval_labels import EvalError, image_files, infer_kind, load_labels
from cli.eval_misses import save_misses
from cli.eval_report import Outcome, as_json, detector_medians, print_text
from cli.eval_run import Progress, run_jobs
from cli.eval_scoring import curve, prediction, score_all

DEFAULT_URL = "http://127.0.0.1:8080"


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
@api_key_option("API key (env VEIL_API_KEY).")
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
    "--curve",
    "curve_text",
    default=None,
    help="Comma-separated thresholds: the recall/false-positive curve, client-side.",
)
@click.option("--json", "as_json_flag", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--save-misses",
    "save_misses_dir",
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
    curve_text: str | None,
    as_json_flag: bool,
    save_misses_dir: Path | None,
    quiet: bool,
) -> None:
    """Measure det_recall@0.3, anon_recall and fp_per_image of the running service on a labelled set."""
    data_dir = data_dir if data_dir is not None else DEFAULT_DATA_DIR
    entries = load_labels(labels_path)
    if limit is not None:
        entries = entries[:limit]
    kind = targets or infer_kind(entries)
    label = "plate" if kind == "plates" else "face"
    images_dir = images_dir if images_dir is not None else labels_path.parent / "images"
    files = image_files(entries, images_dir)
    thresholds = parse_thresholds(curve_text) if curve_text else []
    url = (url or stack_url(data_dir) or DEFAULT_URL).rstrip("/")
    token = api_key_or_new(data_dir, api_key or os.environ.get("VEIL_API_KEY"), "veil-eval")

    form_options = {"targets": kind}
    if min_score is not None:
        form_options["min_score"] = f"{min_score:g}"
    progress = Progress(len(files), enabled=not quiet)
    start = time.perf_counter()
    try:
        jobs = asyncio.run(run_jobs(url, token, files, form_options, concurrency, timeout, progress))
    except OSError as exc:
        raise EvalError(f"cannot reach the service at {url}: {exc}") from exc
    wall = time.perf_counter() - start
    predictions = [prediction(job, label) for job in jobs]
    results = score_all(entries, predictions, kind)
    outcome = Outcome(
        labels=labels_path,
        kind=kind,
        url=url,
        min_score=min_score,
        concurrency=concurrency,
        images=len(files),
        overall=metrics.summarize(results),
        subsets=metrics.by_subset(results),
        misses=[m for r in results for m in r.misses],
        failed=[
            (e["file"], j.get("error"))
            for e, j in zip(entries, jobs, strict=True)
            if j["status"] != "succeeded"
        ],
        curve=curve(entries, predictions, kind, thresholds),
        wall_seconds=wall,
        detector_ms=detector_medians(jobs),
    )
    saved = 0
    if save_misses_dir is not None:
        by_file = {e["file"]: j for e, j in zip(entries, jobs, strict=True)}
        saved = save_misses(save_misses_dir, images_dir, results, by_file, label)
    if as_json_flag:
        click.echo(json.dumps(as_json(outcome), indent=2))
        return
    print_text(outcome)
    if save_misses_dir is not None:
        click.echo(f"\n{saved} images with misses drawn in {save_misses_dir}")
