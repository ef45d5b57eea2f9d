"""A video job's part of the blur task (workers/tasks.py ``_process``): the source streamed to a temporary
file, :func:`workers.video.run.anonymize_video` on an inference lane, the result uploaded from its file as
``results/<id>.mp4``; both files deleted whatever happens. Fails closed like a photo: any error fails the
whole job and nothing is uploaded (the result is uploaded only once the whole video is written).

While the pipeline runs (in its lane's thread), the event loop writes its progress into the job record and
reads the job's cancel flag (:mod:`shared.jobcancel`) about once a second. A cancelled job stops at the
pipeline's next batch (its ``expired()`` check) and fails ``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from shared.bulk_progress import CANCELLED_CODE
from shared.errors import DetectionError, NotFoundError, PermanentError, ValidationError
from shared.jobcancel import CancelFlags
from shared.jobs import (
    BlurOptions,
    Detection,
    InputInfo,
    JobProgress,
    JobRecord,
    JobRequest,
    JobStatus,
    ObjectRef,
    ResultInfo,
    utcnow,
)
from shared.settings import VideoSettings
from workers.context import WorkerContext
from workers.lanes import detect_in_lane
from workers.sweeper import job_deadline
from workers.video.run import VideoResult, anonymize_video

log = logging.getLogger("veil.worker")

WATCH_INTERVAL_SECONDS = 1.0  # progress written, cancel flag read: about this often


class JobCancelledError(PermanentError):
    code = CANCELLED_CODE


@dataclass
class VideoWatch:
    """What the pipeline's thread reports (plain ints: a torn read is at worst one report behind) and what
    the loop tells it (the cancel flag, a thread-safe event)."""

    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def report(self) -> JobProgress:
        eta = None
        if 0 < self.done <= self.total:
            elapsed = time.monotonic() - self.started
            eta = round(elapsed / self.done * (self.total - self.done), 1)
        return JobProgress(frames_done=self.done, frames_total=max(self.total, self.done), eta_seconds=eta)


async def check_cancelled(state: WorkerContext, job_id: str, what: str) -> None:
    """Raise :class:`JobCancelledError` if the job's owner cancelled it."""
    if await CancelFlags(state.redis, state.settings.redis.prefix).cancelled(job_id):
        raise JobCancelledError(f"the job was cancelled by its owner {what}")


@contextlib.asynccontextmanager
async def watching(
    state: WorkerContext, request: JobRequest, record: JobRecord, watch: VideoWatch
) -> AsyncIterator[None]:
    """Write progress and read the cancel flag from the event loop while the body runs."""

    async def loop() -> None:
        flags = CancelFlags(state.redis, state.settings.redis.prefix)
        reported = -1
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            try:
                if await flags.cancelled(request.id):
                    watch.cancel.set()
                if watch.done != reported:
                    reported = watch.done
                    record.progress = watch.report()
                    # Conditional: a job ended elsewhere is left alone. Its sweeper deadline moves on too.
                    await state.jobs.start(record, deadline=job_deadline(state.settings, video=True))
            except Exception:  # progress is a courtesy: a Redis hiccup must not fail the video
                log.warning("job %s: could not report progress", request.id, exc_info=True)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def job_settings(video: VideoSettings, options: BlurOptions) -> VideoSettings:
    """The worker's video settings with the job's own ``keep_audio`` / ``detect_every_n``, where set."""
    changes = {"keep_audio": options.keep_audio, "detect_every_n": options.detect_every_n}
    return video.model_copy(update={name: value for name, value in changes.items() if value is not None})


def to_detections(result: VideoResult) -> list[Detection]:
    return [
        Detection.model_validate(
            {
                "class": det.cls,
                "score": round(float(det.score), 4),
                "box": [round(v) for v in det.box],
                "sources": list(det.sources),
                "text": det.text,
                "first_frame": det.first_frame,
                "last_frame": det.last_frame,
            }
        )
        for det in result.detections
    ]


async def process_video(
    state: WorkerContext,
    request: JobRequest,
    record: JobRecord,
    put: Callable[[ObjectRef, Path, str], Awaitable[None]],
) -> None:
    """Blur the job's video into ``record`` (succeeded); ``put(ref, path, content_type)`` uploads a file and
    records the write (workers/tasks.py). Raises what fails the job."""
    settings = state.settings
    with tempfile.TemporaryDirectory(prefix="veil-video-") as folder:
        src, dst = Path(folder) / "source", Path(folder) / "result"
        t0 = time.perf_counter()
        try:
            await state.transfer.download(
                request.source.key, src, request.source.bucket, settings.limits.max_video_bytes
            )
        except NotFoundError as exc:
            raise ValidationError(
                "the uploaded video is no longer in the store", code="SOURCE_MISSING"
            ) from exc
        fetch_ms = (time.perf_counter() - t0) * 1000
        watch = VideoWatch()
        video_settings = job_settings(settings.video, request.options)

        def run(expired: Callable[[], bool]) -> VideoResult:
            return anonymize_video(
                src,
                dst,
                state.anonymizer,
                request.options,
                settings=video_settings,
                face_max_side=settings.worker.face_max_side,
                progress=watch.progress,
                expired=lambda: watch.cancel.is_set() or expired(),
            )

        try:
            async with watching(state, request, record, watch):
                laned = await detect_in_lane(state.inference, run, settings.video.job_timeout_seconds)
        except DetectionError as exc:
            if watch.cancel.is_set():
                raise JobCancelledError("the job was cancelled by its owner while it ran") from exc
            raise
        if watch.cancel.is_set():  # cancelled after the last batch: still nothing is written
            raise JobCancelledError("the job was cancelled by its owner while it ran")
        result = laned.value

        t1 = time.perf_counter()
        key = state.store.result_key(request.id, result.extension)
        await put(ObjectRef(bucket=state.store.bucket, key=key), dst, result.content_type)
        if request.output is not None:  # bulk jobs: a blurred copy into the customer's bucket too
            await put(request.output, dst, result.content_type)
    ttl = settings.s3.result_ttl_seconds
    finished = utcnow()
    info = result.info
    record.status = JobStatus.SUCCEEDED
    record.input = InputInfo(
        width=info.width,
        height=info.height,
        format=request.input.format,
        duration=round(info.duration, 3),
        fps=round(info.fps, 3),
        frames=result.frames_written,
        codec=info.codec,
    )
    record.detections = to_detections(result)
    record.blurred_regions = []  # per frame in a video: the detections' tracks say where
    record.progress = JobProgress(
        frames_done=result.frames_written, frames_total=result.frames_written, eta_seconds=0.0
    )
    record.result = ResultInfo(
        url=state.store.presign_get(key, ttl),
        expires_at=finished + timedelta(seconds=ttl),
        content_type=result.content_type,
        key=key,
    )
    record.error = None
    record.timings_ms = {"fetch": round(fetch_ms, 1), **result.timings_ms}
    record.timings_ms["store"] = round((time.perf_counter() - t1) * 1000, 1)
