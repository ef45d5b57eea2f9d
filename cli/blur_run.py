"""``veil blur``'s run: each image through the native API (upload, poll with backoff, fetch the result
through ``GET /v1/jobs/{id}/result``'s redirect), ``concurrency`` at a time, each result written whole
(:mod:`cli.blur_output`) and then recorded as finished (:mod:`cli.blur_state`).

Ctrl-C (or SIGTERM) stops taking new files and lets the ones in flight finish and be recorded; a second one
leaves them (they are sent again next run). A refused key stops the run too: every other file would fail
the same way.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cli.blur_files import InputFile, output_rel, sniff_media
from cli.blur_output import write_atomic
from cli.blur_progress import Progress
from cli.blur_state import BlurState, Finished
from cli.client import ApiError, VeilClient

FIRST_POLL_S = 0.2
MAX_POLL_S = 2.0
BUSY = (429, 503)  # RATE_LIMITED, QUEUE_FULL, MODELS_NOT_READY …: worth another try
MAX_BUSY_WAIT_S = 15.0


class BlurError(Exception):
    """The run cannot start (the service cannot be reached)."""


@dataclass(frozen=True)
class RunConfig:
    url: str
    api_key: str
    options: dict[str, str]  # the job's form fields (targets …)
    concurrency: int
    timeout_s: float  # per image, from its upload to its result


@dataclass(frozen=True)
class Failure:
    rel: str
    code: str
    message: str


@dataclass
class RunResult:
    finished: list[Finished] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)  # left when the run was stopped
    interrupted: bool = False


class FileFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _error_of(status: int, body: Any) -> FileFailed:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, dict) and "code" in body:  # the API's own errors: {"message", "code"}
        return FileFailed(str(body["code"]), str(body.get("message", "")))
    if isinstance(error, dict):
        return FileFailed(str(error.get("code", f"HTTP_{status}")), str(error.get("message", "")))
    return FileFailed(f"HTTP_{status}", str(body)[:200])


def describe(job: dict[str, Any]) -> str:
    """``2 faces, 1 plate`` (or ``nothing found``), for the progress line."""
    counts: dict[str, int] = {}
    for detection in job.get("detections") or []:
        name = str(detection.get("class", "?"))
        counts[name] = counts.get(name, 0) + 1
    parts = [f"{n} {name}{'s' if n != 1 else ''}" for name, n in sorted(counts.items())]
    return ", ".join(parts) or "nothing found"


class Runner:
    def __init__(self, api: VeilClient, state: BlurState, config: RunConfig, progress: Progress) -> None:
        self.api, self.state, self.config, self.progress = api, state, config, progress
        self.stop = asyncio.Event()
        self.record_lock = asyncio.Lock()
        self.result = RunResult()

    async def submit(self, item: InputFile, data: bytes, deadline: float) -> dict[str, Any]:
        wait_s = 1.0
        while True:
            status, answer = await self.api.submit_photo(item.path.name, data, self.config.options)
            if status in (200, 202):
                return answer
            if status not in BUSY or time.monotonic() + wait_s > deadline or self.stop.is_set():
                raise _error_of(status, answer)
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, MAX_BUSY_WAIT_S)

    async def blur_one(self, item: InputFile) -> Finished:
        deadline = time.monotonic() + self.config.timeout_s
        try:
            data = await asyncio.to_thread(item.path.read_bytes)
        except OSError as exc:
            raise FileFailed("READ_ERROR", exc.strerror or str(exc)) from exc
        created = await self.submit(item, data, deadline)
        job = await self.api.until_finished(created, FIRST_POLL_S, deadline, max_poll_s=MAX_POLL_S)
        if job is None:
            raise FileFailed("TIMEOUT", f"job {created['id']} not finished after {self.config.timeout_s:g}s")
        if job["status"] != "succeeded":
            raise _error_of(200, job)
        status, body = await self.api.result(job["id"])
        if status != 200:
            raise _error_of(status, _json_or_text(body))
        fmt = sniff_media(body)
        if fmt is None:
            raise FileFailed("BAD_RESULT", f"the result of job {job['id']} is not an image or a video")
        rel_out = output_rel(item.rel, fmt)
        await asyncio.to_thread(write_atomic, self.state.temp_dir, self.state.out / rel_out, body)
        entry = Finished(
            rel=item.rel,
            size=item.size,
            mtime_ns=item.mtime_ns,
            options=self.config.options,
            output=rel_out,
            job=job["id"],
            detections=job.get("detections") or [],
            blurred_regions=job.get("blurred_regions") or [],
        )
        async with self.record_lock:  # one writer of the state file at a time
            await asyncio.to_thread(self.state.record, entry)
        self.progress.finished(item.rel, True, describe(job))
        return entry

    async def lane(self, todo: deque[InputFile]) -> None:
        while todo and not self.stop.is_set():
            item = todo.popleft()
            try:
                self.result.finished.append(await self.blur_one(item))
                continue
            except FileFailed as exc:
                failure = Failure(item.rel, exc.code, exc.message)
            except ApiError as exc:
                failure = Failure(item.rel, _error_of(exc.status, exc.body).code, str(exc))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failure = Failure(item.rel, "CONNECTION_ERROR", f"{type(exc).__name__}: {exc}")
            self.result.failed.append(failure)
            self.progress.finished(item.rel, False, failure.code)
            if failure.code == "UNAUTHORIZED":
                self.progress.note("the API key was refused: stopping")
                self.stop.set()

    async def run(self, items: list[InputFile]) -> RunResult:
        todo = deque(items)
        lanes = [asyncio.create_task(self.lane(todo)) for _ in range(self.config.concurrency)]
        loop = asyncio.get_running_loop()

        def interrupted() -> None:
            if self.result.interrupted:  # the second time: leave what is in flight
                for lane in lanes:
                    lane.cancel()
                return
            self.result.interrupted = True
            self.stop.set()
            self.progress.note("interrupted: finishing the images in flight (Ctrl-C again to leave them)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted)
        try:
            await asyncio.gather(*lanes, return_exceptions=True)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        done = {f.rel for f in self.result.finished} | {f.rel for f in self.result.failed}
        self.result.unsent = [item.rel for item in items if item.rel not in done]
        return self.result


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]


async def blur_files(
    items: list[InputFile], state: BlurState, config: RunConfig, progress: Progress
) -> RunResult:
    """Send ``items``; a :class:`BlurError` if the service cannot be reached at all."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    connector = aiohttp.TCPConnector(limit=config.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        api = VeilClient(http, config.url, config.api_key)
        try:
            await api.health()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BlurError(f"cannot reach the service at {config.url}: {exc}") from exc
        return await Runner(api, state, config, progress).run(items)
