"""The arq task: fetch → decode → detect → blur → encode → store → report. Privacy fails closed.

Every exit path leaves the job in a final state, or hands it back to arq for a retry on a transient error:
arq's job timeout too, which cancels the task (the record is written failed, ``JOB_TIMEOUT``, shielded from
the cancellation and bounded in time, before the cancellation goes on). No un-blurred byte is ever written
under the results prefix (the result is written only after detection and blurring succeeded on the whole
image), and a job that failed keeps no result. The original (and a facade's logo) is deleted when the job
ends; deletions the store refuses stay in Redis for the sweeper (``workers/sweeper.py``), which also fails
the jobs no run will finish (every run crashed, or the worker died while recording the end). A payload that
names anything in Veil's bucket but the job's own upload, or a non-canonical key, fails unread
(``VALIDATION_ERROR``) and none of its objects is deleted.

Record writes are conditional (:meth:`shared.jobstore.JobStore.start` / ``finish``): a run that ends after
its job was ended elsewhere (by the sweeper, or by a duplicate run) writes nothing, and takes back the
result it wrote if the job failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from shared.bulk_progress import CANCELLED_CODE
from shared.errors import (
    DetectionError,
    NotFoundError,
    PermanentError,
    TransientError,
    ValidationError,
)
from shared.jobs import (
    Detection,
    ImageFormat,
    InputInfo,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    ObjectRef,
    ResultInfo,
    utcnow,
)
from shared.jobstore import RunningJob
from workers import bulk, metrics, payload_check, videojob
from workers.context import WorkerContext, worker_context
from workers.lanes import detect_in_lane
from workers.notify import enqueue_delivery
from workers.pipeline import AnonymizeResult
from workers.sweeper import (
    JOB_TIMEOUT_CODE,
    delete_objects,
    job_deadline,
    job_timeout,
    logo_objects,
    result_objects,
)

# How long a cancelled job may take to record its end (Redis, then deleting its original): arq waits for
# it before it lets the job go, and its claim on the job lasts only 10 s past the job timeout.
END_ON_CANCEL_SECONDS = 8.0

log = logging.getLogger("veil.worker")


def _to_detections(result: AnonymizeResult) -> list[Detection]:
    detections = []
    for det in result.detections:
        polygon = [[round(x), round(y)] for x, y in det.polygon] if det.polygon else None
        detections.append(
            Detection.model_validate(
                {
                    "class": det.label,
                    "score": round(float(det.score), 4),
                    "box": [round(v) for v in det.box],
                    "polygon": polygon,
                    "sources": list(det.sources),
                    "text": det.text,
                    "text_score": None if det.text_score is None else round(float(det.text_score), 4),
                    "skipped": det.skipped,
                }
            )
        )
    return detections


async def _load_record(state: WorkerContext, request: JobRequest) -> JobRecord:
    record = await state.jobs.get(request.id)
    if record is None:  # the record expired or was never written: rebuild it from the payload
        record = JobRecord(
            id=request.id,
            owner=request.owner,
            created_at=request.created_at,
            input=request.input,
            options=request.options,
        )
    return record


def _untouched(request: JobRequest, **changes: object) -> JobRequest:
    """``request`` with none of its objects to be deleted or written (and ``changes``)."""
    return request.model_copy(
        update={
            "delete_source": False,
            "output": None,
            "options": request.options.model_copy(update={"logo_key": None}),
            **changes,
        }
    )


async def _bulk_child_ended(
    ctx: dict[str, Any], state: WorkerContext, bulk_id: str, record: JobRecord
) -> None:
    """Count a bulk job's child as ended (once, however often reported): the bulk job's progress and its
    ``bulk.finished`` follow from it. A failure here leaves the job as it is."""
    try:
        await bulk.ended(ctx, state, bulk_id, record)
    except (RedisError, OSError):
        log.warning("job %s: could not count it in bulk job %s", record.id, bulk_id, exc_info=True)


def _running(request: JobRequest) -> RunningJob:
    return RunningJob(
        original=request.source if request.delete_source else None,
        output=request.output,
        callback_url=request.callback_url,
    )


async def _end(
    ctx: dict[str, Any],
    state: WorkerContext,
    request: JobRequest,
    record: JobRecord,
    writes: dict[ObjectRef, bool],
) -> dict[str, Any]:
    """Write the final record (unless the job was ended elsewhere), delete the original (and a failed
    job's results), queue the webhook. ``writes``: objects this run wrote (True) or may have written."""
    record.finished_at = utcnow()
    succeeded = record.status is JobStatus.SUCCEEDED
    settings = state.settings
    # The original, and a facade's logo (the facade deletes it too, unless it stopped waiting for the job).
    original = [request.source] if request.delete_source else []
    original += logo_objects(state.store, request.options)
    taken_back: list[ObjectRef] = []
    if not succeeded:
        taken_back = list(writes)
        if record.attempts > 1:  # an earlier run may have written them before it crashed or timed out
            taken_back += [
                *result_objects(state.store, request.id),
                *([request.output] if request.output else []),
            ]
    # Deletions not confirmed below wait for the sweeper, a job timeout from now: a write cut off by a
    # cancellation may still land in the store before then.
    due = time.time() + job_timeout(settings, video=request.input.is_video)
    # If this write fails (or may have: a cancellation, a lost connection), the job stays in the sweeper's
    # index; unless it turns out final, the sweeper fails it and deletes its result. Deleting it here could
    # take the result of a job whose record did become final.
    ended = await state.jobs.finish(record, count_success=succeeded, delete=[*original, *taken_back], due=due)
    if ended is not None:
        # Ended elsewhere first (the sweeper, or a duplicate run). Its result, if it succeeded, is under the
        # same key with the same bytes; if it failed, what this run wrote must go.
        if ended is JobStatus.FAILED and writes:
            refs = list(writes)
            await state.jobs.delete_later(refs, due)
            await state.jobs.deleted(await delete_objects(state, [r for r in refs if writes[r]]))
        log.warning("job %s was already %s; this run's outcome is dropped", request.id, ended.value)
        if request.bulk_id and (final := await state.jobs.get(request.id)) is not None:
            await _bulk_child_ended(ctx, state, request.bulk_id, final)  # the sweeper does not count it
        return {"status": ended.value, "repeat": True}
    metrics.observe_job(record)  # the record is final: count the job once, here

    # Now: the original, and what this run is known to have written. The rest waits for the sweeper.
    at_once = [*original, *(ref for ref in taken_back if writes.get(ref))]
    if at_once:
        done = await delete_objects(state, at_once)
        if len(done) < len(at_once):
            left = len(at_once) - len(done)
            log.warning("job %s: %d object(s) left for the sweeper to delete", request.id, left)
        await state.jobs.deleted(done)
    if request.callback_url:
        await enqueue_delivery(ctx["redis"], request.id, request.callback_url, settings.redis.queue_name)
    if request.bulk_id:
        await _bulk_child_ended(ctx, state, request.bulk_id, record)
    if record.error is not None:
        log.info("job %s %s: %s", request.id, record.status.value, record.error.code)
    else:
        log.info("job %s %s: %d detections", request.id, record.status.value, len(record.detections))
    return {"status": record.status.value}


async def _fetch_logo(state: WorkerContext, request: JobRequest) -> bytes | None:
    """A facade's logo for the plates (Plate Recognizer's ``logo``), stored by the gateway as an upload."""
    key = request.options.logo_key
    if key is None:
        return None
    if not key.startswith(state.settings.s3.uploads_prefix + "logo-"):
        raise ValidationError("logo_key must name a logo stored by the gateway")
    try:
        stored = await state.transfer.get(key, None, state.settings.limits.max_upload_bytes)
    except NotFoundError as exc:
        raise ValidationError("the logo is no longer in the store", code="SOURCE_MISSING") from exc
    return stored.body


async def _put(
    state: WorkerContext, writes: dict[ObjectRef, bool], ref: ObjectRef, body: bytes, ctype: str
) -> None:
    writes[ref] = False  # from here on the object may exist, whatever becomes of this call
    await state.transfer.put(ref.key, body, ctype, ref.bucket)
    writes[ref] = True


async def _put_file(
    state: WorkerContext, writes: dict[ObjectRef, bool], ref: ObjectRef, path: Path, ctype: str
) -> None:
    """:func:`_put` of a file (a video's result), streamed from disk."""
    writes[ref] = False
    await state.transfer.upload(ref.key, path, ctype, ref.bucket)
    writes[ref] = True


async def _process(
    state: WorkerContext, request: JobRequest, record: JobRecord, writes: dict[ObjectRef, bool]
) -> None:
    settings = state.settings
    # Cancelled while queued (POST /v1/jobs/{id}/cancel): ends unread, its upload deleted by _end.
    await videojob.check_cancelled(state, request.id, "before it started")
    if request.input.is_video:
        await videojob.process_video(
            state, request, record, lambda ref, path, ctype: _put_file(state, writes, ref, path, ctype)
        )
        return
    t0 = time.perf_counter()
    try:
        stored = await state.transfer.get(
            request.source.key, request.source.bucket, settings.limits.max_upload_bytes
        )
    except NotFoundError as exc:
        raise ValidationError("the uploaded image is no longer in the store", code="SOURCE_MISSING") from exc
    logo = await _fetch_logo(state, request)
    fetch_ms = (time.perf_counter() - t0) * 1000

    def detect(expired: Callable[[], bool]) -> AnonymizeResult:
        return state.anonymizer.run(
            stored.body,
            request.options,
            max_pixels=settings.limits.max_pixels,
            face_max_side=settings.worker.face_max_side,
            logo=logo,
            expired=expired,
        )

    laned = await detect_in_lane(state.inference, detect, settings.worker.detect_timeout_seconds)
    result = laned.value

    t1 = time.perf_counter()
    fmt = ImageFormat(result.format)
    key = state.store.result_key(request.id, fmt.extension)
    # Re-runs overwrite the same key: the job is idempotent.
    await _put(
        state, writes, ObjectRef(bucket=state.store.bucket, key=key), result.image, result.content_type
    )
    if request.output is not None:  # bulk jobs: a blurred copy into the customer's bucket too
        await _put(state, writes, request.output, result.image, result.content_type)
    ttl = settings.s3.result_ttl_seconds
    url = state.store.presign_get(key, ttl)
    finished = utcnow()
    record.status = JobStatus.SUCCEEDED
    record.input = InputInfo(width=result.width, height=result.height, format=fmt)
    record.detections = _to_detections(result)
    record.blurred_regions = [list(region) for region in result.regions]
    record.result = ResultInfo(
        url=url,
        expires_at=finished + timedelta(seconds=ttl),
        content_type=result.content_type,
        key=key,
    )
    record.error = None
    record.timings_ms = {"fetch": round(fetch_ms, 1), **result.timings_ms}
    record.timings_ms["store"] = round((time.perf_counter() - t1) * 1000, 1)


def _fail(record: JobRecord, code: str, message: str) -> None:
    record.status, record.error, record.result = JobStatus.FAILED, JobError(code=code, message=message), None


async def _shielded(work: Coroutine[Any, Any, Any], seconds: float) -> None:
    """Run ``work`` to its end though the caller is being cancelled (a second cancellation leaves it
    running), for at most ``seconds``; its failure is logged, not raised."""
    task = asyncio.ensure_future(asyncio.wait_for(work, seconds))
    try:
        await asyncio.shield(task)
    except Exception:
        log.warning("could not record the end of a cancelled job", exc_info=True)


async def _end_cancelled(
    ctx: dict[str, Any],
    state: WorkerContext,
    request: JobRequest,
    record: JobRecord,
    writes: dict[ObjectRef, bool],
) -> None:
    if state.stopping:  # the worker is stopping: arq runs the job again, here or elsewhere
        record.status = JobStatus.QUEUED
        await state.jobs.start(
            record,
            deadline=job_deadline(state.settings, video=request.input.is_video),
            running=_running(request),
        )
        log.info("job %s handed back to the queue (worker stopping)", request.id)
        return
    # arq's job timeout, which arq treats as final: so is the record.
    timeout = job_timeout(state.settings, video=request.input.is_video)
    _fail(record, JOB_TIMEOUT_CODE, f"the job did not finish within {timeout}s; try again later")
    await _end(ctx, state, request, record, writes)


@metrics.in_flight
async def anonymize(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    state = worker_context(ctx)
    try:
        request = JobRequest.model_validate(payload)
    except Exception:  # a payload we cannot read is a bug or a newer contract: never retry it
        log.exception("unreadable job payload (contract version %s)", payload.get("version"))
        return {"status": "failed", "code": "BAD_PAYLOAD"}

    record = await _load_record(state, request)
    if record.status.finished:
        if request.bulk_id:  # a repeated run: its end may not have been counted yet
            await _bulk_child_ended(ctx, state, request.bulk_id, record)
        return {"status": record.status.value, "repeat": True}

    if request.bulk_id and record.attempts == 0 and await bulk.is_cancelled(state, request.bulk_id):
        # Never started, and its bulk job was cancelled: it ends unread, writing and deleting nothing, and
        # without a webhook of its own (the bulk job's bulk.finished counts it).
        _fail(record, CANCELLED_CODE, "the bulk job was cancelled before this image was started")
        return await _end(ctx, state, _untouched(request, callback_url=None), record, {})

    refusal = payload_check.refusal(state.store, request)
    if refusal is not None:  # not what the gateway queues: fail it unread, and delete none of its objects
        log.warning("job %s refused: %s", request.id, refusal)
        record.attempts += 1
        _fail(record, "VALIDATION_ERROR", f"refused: {refusal}")
        return await _end(ctx, state, _untouched(request), record, {})

    record.status = JobStatus.RUNNING
    record.started_at = record.started_at or utcnow()
    record.attempts += 1
    # arq logs the start (with the try and the time queued). Until the job ends the sweeper watches it.
    ended = await state.jobs.start(
        record, deadline=job_deadline(state.settings, video=request.input.is_video), running=_running(request)
    )
    if ended is not None:  # ended meanwhile (the sweeper, or a duplicate run)
        return {"status": ended.value, "repeat": True}
    if request.bulk_id:
        try:
            await bulk.started(state, request.bulk_id, request.id)
        except (RedisError, OSError):  # only its bulk job's progress misses it, until it ends
            log.warning("job %s: could not count it in bulk job %s", request.id, request.bulk_id)

    writes: dict[ObjectRef, bool] = {}
    try:
        await _process(state, request, record, writes)
    except asyncio.CancelledError:  # arq's job timeout (or the worker stopping)
        await _shielded(_end_cancelled(ctx, state, request, record, writes), END_ON_CANCEL_SECONDS)
        raise
    except TransientError as exc:
        job_try = ctx.get("job_try", 1)
        if job_try < state.settings.worker.max_tries:
            log.warning("job %s: %s; retrying", request.id, exc.message)
            record.status = JobStatus.QUEUED
            defer = 2 * job_try
            running = _running(request)
            ended = await state.jobs.start(
                record,
                deadline=job_deadline(state.settings, defer, video=request.input.is_video),
                running=running,
            )
            if ended is not None:
                return {"status": ended.value, "repeat": True}
            raise Retry(defer=defer) from exc
        _fail(record, exc.code, exc.message)
    except (PermanentError, DetectionError) as exc:
        _fail(record, exc.code, exc.message)
    except Exception as exc:  # fail closed: anything unexpected fails the job, nothing is written
        log.exception("job %s failed unexpectedly", request.id)
        _fail(record, "INTERNAL_ERROR", f"processing failed: {type(exc).__name__}")

    return await _end(ctx, state, request, record, writes)
