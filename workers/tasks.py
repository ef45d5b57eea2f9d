"""The arq task: fetch → decode → detect → blur → encode → store → report. Privacy fails closed.

Every exit path leaves the job in a final state (or hands it back to arq for a retry on a transient
error), and no un-blurred byte is ever written under the results prefix: the result is written only
after detection and blurring succeeded on the whole image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from arq import Retry

from shared.errors import (
    DetectionError,
    DetectionTimeoutError,
    NotFoundError,
    PermanentError,
    TransientError,
    ValidationError,
    VeilError,
)
from shared.jobs import (
    Detection,
    ImageFormat,
    InputInfo,
    JobError,
    JobRecord,
    JobRequest,
    JobStatus,
    ResultInfo,
    utcnow,
)
from workers.context import WorkerContext, worker_context
from workers.notify import enqueue_delivery
from workers.pipeline import AnonymizeResult

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


async def _finish(state: WorkerContext, request: JobRequest, record: JobRecord) -> None:
    record.finished_at = utcnow()
    # The final record, its announcement and the owner's usage count: one round trip.
    await state.jobs.put(record, count_success=record.status is JobStatus.SUCCEEDED)
    if request.delete_source:
        try:
            await state.transfer.delete(request.source.key, request.source.bucket)
        except VeilError:  # the lifecycle rule on uploads/ removes it within a day anyway
            log.warning("could not delete original of job %s", request.id)


async def _fetch_logo(state: WorkerContext, request: JobRequest) -> bytes | None:
    """A facade's logo for the plates (Plate Recognizer's ``logo``), stored by the gateway as an upload."""
    key = request.options.logo_key
    if key is None:
        return None
    if not key.startswith(state.settings.s3.uploads_prefix + "logo-"):
        raise ValidationError("logo_key must name a logo stored by the gateway")
    try:
        stored = await asyncio.to_thread(state.store.get, key, None, state.settings.limits.max_upload_bytes)
    except NotFoundError as exc:
        raise ValidationError("the logo is no longer in the store", code="SOURCE_MISSING") from exc
    return stored.body


async def _process(state: WorkerContext, request: JobRequest, record: JobRecord) -> None:
    settings = state.settings
    t0 = time.perf_counter()
    try:
        stored = await state.transfer.get(
            request.source.key, request.source.bucket, settings.limits.max_upload_bytes
        )
    except NotFoundError as exc:
        raise ValidationError("the uploaded image is no longer in the store", code="SOURCE_MISSING") from exc
    except ValueError as exc:
        raise ValidationError(str(exc), code="PAYLOAD_TOO_LARGE") from exc
    logo = await _fetch_logo(state, request)
    fetch_ms = (time.perf_counter() - t0) * 1000

    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(
        state.inference,
        lambda: state.anonymizer.run(
            stored.body,
            request.options,
            max_pixels=settings.limits.max_pixels,
            face_max_side=settings.worker.face_max_side,
            logo=logo,
        ),
    )
    try:
        result = await asyncio.wait_for(work, timeout=settings.worker.detect_timeout_seconds)
    except TimeoutError as exc:
        raise DetectionTimeoutError(
            f"detection took longer than {settings.worker.detect_timeout_seconds:g}s"
        ) from exc

    t1 = time.perf_counter()
    fmt = ImageFormat(result.format)
    key = state.store.result_key(request.id, fmt.extension)
    # Re-runs overwrite the same key: the job is idempotent.
    await state.transfer.put(key, result.image, result.content_type)
    if request.output is not None:  # bulk jobs: a blurred copy into the customer's bucket too
        await state.transfer.put(request.output.key, result.image, result.content_type, request.output.bucket)
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


async def anonymize(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    state = worker_context(ctx)
    try:
        request = JobRequest.model_validate(payload)
    except Exception:  # a payload we cannot read is a bug or a newer contract: never retry it
        log.exception("unreadable job payload (contract version %s)", payload.get("version"))
        return {"status": "failed", "code": "BAD_PAYLOAD"}

    record = await _load_record(state, request)
    if record.status.finished:
        return {"status": record.status.value, "repeat": True}

    record.status = JobStatus.RUNNING
    record.started_at = record.started_at or utcnow()
    record.attempts += 1
    await state.jobs.put(record)  # arq logs the start (with the try and the time queued)

    try:
        await _process(state, request, record)
    except TransientError as exc:
        if ctx.get("job_try", 1) < state.settings.worker.max_tries:
            log.warning("job %s: %s; retrying", request.id, exc.message)
            record.status = JobStatus.QUEUED
            await state.jobs.put(record)
            raise Retry(defer=2 * ctx.get("job_try", 1)) from exc
        record.status, record.error = JobStatus.FAILED, JobError(code=exc.code, message=exc.message)
    except (PermanentError, DetectionError) as exc:
        record.status, record.error = JobStatus.FAILED, JobError(code=exc.code, message=exc.message)
    except Exception as exc:  # fail closed: anything unexpected fails the job, nothing is written
        log.exception("job %s failed unexpectedly", request.id)
        record.status = JobStatus.FAILED
        record.error = JobError(code="INTERNAL_ERROR", message=f"processing failed: {type(exc).__name__}")

    await _finish(state, request, record)
    if request.callback_url:
        await enqueue_delivery(
            ctx["redis"], request.id, request.callback_url, state.settings.redis.queue_name
        )
    if record.error is not None:
        log.info("job %s %s: %s", request.id, record.status.value, record.error.code)
    else:
        log.info("job %s %s: %d detections", request.id, record.status.value, len(record.detections))
    return {"status": record.status.value}


async def sweep_expired(ctx: dict[str, Any]) -> dict[str, int]:
    """Hourly: delete results and stray uploads older than their TTL (for stores without lifecycle rules)."""
    state = worker_context(ctx)
    now = utcnow()
    s3 = state.settings.s3
    results = await asyncio.to_thread(
        state.store.delete_older_than, s3.results_prefix, timedelta(seconds=s3.result_ttl_seconds), now
    )
    uploads = await asyncio.to_thread(
        state.store.delete_older_than, s3.uploads_prefix, timedelta(days=1), now
    )
    return {"results": results, "uploads": uploads}
