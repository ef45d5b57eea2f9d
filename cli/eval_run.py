"""``veil eval``'s run: every labelled image through the service's HTTP API, the path users take
(``POST /v1/jobs``, poll ``GET /v1/jobs/{id}``), with a progress line on stderr."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from cli.client import ApiError, VeilClient
from cli.eval_labels import EvalError

POLL_SECONDS = 0.05


class Progress:
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


async def run_jobs(
    url: str,
    api_key: str,
    files: list[Path],
    form_options: dict[str, str],
    concurrency: int,
    job_timeout: float,
    progress: Progress,
) -> list[dict[str, Any]]:
    """The finished job record of every file, in order; an :class:`EvalError` at the first that is not."""
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)

    async def one(api: VeilClient, path: Path) -> dict[str, Any]:
        async with semaphore:
            data = await asyncio.to_thread(path.read_bytes)
            status, created = await api.submit_photo(path.name, data, form_options)
            if status != 202:
                raise EvalError(f"{path.name}: HTTP {status}: {created}")
            try:
                job = await api.until_finished(created, POLL_SECONDS, time.monotonic() + job_timeout)
            except ApiError as exc:
                raise EvalError(f"{path.name}: {exc}") from exc
            if job is None:
                raise EvalError(f"{path.name}: job {created['id']} not finished after {job_timeout:g}s")
            progress.step()
            return job

    connector = aiohttp.TCPConnector(limit=max(4, concurrency * 2))
    async with aiohttp.ClientSession(connector=connector) as http:
        api = VeilClient(http, url, api_key)
        return list(await asyncio.gather(*(one(api, f) for f in files)))
