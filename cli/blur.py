"""``veil blur PATH... --out DIR``: blur every image under the paths given through a running Veil (any URL),
mirroring the tree into DIR, resumable.

Parts: :mod:`cli.blur_files` (walk, image or not), :mod:`cli.blur_state` (what is finished),
:mod:`cli.blur_run` (upload, poll, download), :mod:`cli.blur_output` (results written whole),
:mod:`cli.blur_progress` (bar or lines), :mod:`cli.blur_report` (summary, manifest, exit status).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from cli.blur_files import InputError, InputFile, check_out_dir, find_inputs
from cli.blur_progress import make_progress
from cli.blur_report import Report, manifest, summary
from cli.blur_run import BlurError, Failure, RunConfig, RunResult, blur_files
from cli.blur_state import BlurState, Finished, StateError
from cli.common import DEFAULT_DATA_DIR, api_key_option, api_key_or_new, stack_url

DEFAULT_URL = "http://127.0.0.1:8080"  # `veil up`'s default, as `veil eval` has it


@click.command("blur")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the results (the tree under each folder given is mirrored; created if missing).",
)
@click.option(
    "--url",
    default=None,
    help=f"Gateway URL (default: the `veil up` stack in --data-dir, else {DEFAULT_URL}).",
)
@api_key_option("API key (env VEIL_API_KEY; default: a new key of the `veil up` stack in --data-dir).")
@click.option(
    "--targets",
    type=click.Choice(["faces", "plates", "faces,plates"]),
    default=None,
    help="What to blur (default: the service's, both).",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=16, show_default=True, help="Jobs in flight."
)
@click.option(
    "--timeout", type=click.FloatRange(1), default=300.0, show_default=True, help="Seconds for one image."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a manifest of every file's detections on stdout."
)
@click.pass_obj
def blur(
    data_dir: Path | None,
    paths: tuple[Path, ...],
    out: Path,
    url: str | None,
    api_key: str | None,
    targets: str | None,
    concurrency: int,
    timeout: float,
    as_json: bool,
) -> None:
    """Blur faces and plates in every JPEG, PNG and WebP under PATHS into --out, resuming where an earlier
    run into the same --out stopped. Exit status: 0 all blurred, 1 some failed, 130 interrupted."""
    data_dir = data_dir if data_dir is not None else DEFAULT_DATA_DIR
    try:
        check_out_dir(paths, out)
        inputs = find_inputs(paths, out)
    except InputError as exc:
        raise click.UsageError(str(exc)) from exc
    url = (url or stack_url(data_dir) or DEFAULT_URL).rstrip("/")
    options = {"targets": targets} if targets else {}
    try:
        state = BlurState.open(out)
    except StateError as exc:
        raise click.ClickException(str(exc)) from exc
    with state:
        earlier: list[Finished] = []
        todo: list[InputFile] = []
        for item in inputs.images:
            done = state.finished(item, options)
            if done is not None:
                earlier.append(done)
            else:
                todo.append(item)
        click.echo(
            f"{len(inputs.images)} images under {', '.join(map(str, paths))}: {len(earlier)} already "
            f"blurred in {out}, {len(todo)} to send to {url}; skipping {len(inputs.others)} (not images)",
            err=True,
        )
        result = RunResult()
        if todo:
            config = RunConfig(
                url, api_key_or_new(data_dir, api_key, "veil-blur"), options, concurrency, timeout
            )
            progress = make_progress(len(inputs.images), len(earlier), sys.stderr)
            try:
                result = asyncio.run(blur_files(todo, state, config, progress))
            except BlurError as exc:
                raise click.ClickException(str(exc)) from exc
            finally:
                progress.close()
    report = Report(
        out=out,
        finished=earlier + result.finished,
        earlier=len(earlier),
        failed=[Failure(rel, "READ_ERROR", why) for rel, why in inputs.unreadable] + result.failed,
        skipped=[item.rel for item in inputs.others],
        unsent=result.unsent,
        interrupted=result.interrupted,
    )
    for line in summary(report):
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps(manifest(report, url), indent=2))
    sys.exit(report.exit_status)
