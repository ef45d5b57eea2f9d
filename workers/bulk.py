"""The ``expand_bulk`` task: list a bulk job's objects and queue one ordinary job per image; and what the
blur task reports of a bulk job's children (started, ended, cancelled).

Each object's header is read with a ranged GET (format and size, no decode), so the child job carries the
same contract as an upload; objects that are not images we support fail at once, without a queue trip.
A cancelled bulk job lists no further.

Each child is charged to the bulk job's key as it is queued (``QuotaStore.reserve``: a credit, and its
daily and monthly caps, but not ``max_concurrent``: the queue's depth paces a bulk job). A child that
cannot be charged fails at once with ``INSUFFICIENT_CREDITS`` or ``QUOTA_EXCEEDED`` and is not queued.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis

from shared.bulk import (
    EXPAND_FUNCTION,
    PAGE_SIZE,
    BulkRecord,
    BulkStatus,
    BulkStore,
    child_ended,
    child_job_id,
    finish_if_done,
    is_image_key,
    output_key,
)
from shared.bulk_progress import outcome_of
from shared.errors import InsufficientCreditsError, QuotaExceededError, VeilError
from shared.imageformat import sniff_video
from shared.jobs import InputInfo, JobError, JobRecord, JobRequest, JobStatus, ObjectRef, utcnow
from shared.queue import enqueue_anonymize
from shared.quotas import QuotaStore
from shared.storage import ObjectStore
from workers.context import WorkerContext, worker_context
from workers.imageops import probe
from workers.notify import enqueue_delivery

log = logging.getLogger("veil.bulk")

HEADER_BYTES = 256 * 1024  # JPEG EXIF blocks can push the size marker well past the first kilobytes
PROBE_CONCURRENCY = 16
QUEUE_WAIT_SECONDS = 10.0  # how long a bulk page waits for room in a busy queue before looking again


def child_request(bulk: BulkRecord, key: str, info: InputInfo) -> JobRequest:
    output = None
    if bulk.output is not None:
        output = ObjectRef(bucket=bulk.output.bucket, key=output_key(bulk.output, bulk.source, key))
    return JobRequest(
        id=child_job_id(bulk.id, key),
        owner=bulk.owner,
        source=ObjectRef(bucket=bulk.source.bucket, key=key),
        delete_source=False,  # the user's own objects are never deleted
        input=info,
        options=bulk.options,
        output=output,
        callback_url=bulk.callback_url,
        bulk_id=bulk.id,
    )


def _probe_object(store: ObjectStore, bucket: str, key: str, *, videos: bool = False) -> InputInfo:
    """A photo's format and size from its first bytes; with ``videos``, a video's container (its size,
    frames and limits are the worker's to read when it runs the job: 0 x 0 until then)."""
    head = store.get_prefix(key, HEADER_BYTES, bucket)
    if videos and (container := sniff_video(head)) is not None:
        return InputInfo(width=0, height=0, format=container)
    fmt, width, height = probe(head)
    return InputInfo(width=width, height=height, format=fmt)


async def _queue_child(
    bulks: BulkStore,
    quotas: QuotaStore,
    store: ObjectStore,
    pool: ArqRedis,
    bulk: BulkRecord,
    key: str,
    queue_name: str,
    *,
    videos: bool = False,
) -> None:
    job_id = child_job_id(bulk.id, key)
    try:
        info = await asyncio.to_thread(_probe_object, store, bulk.source.bucket, key, videos=videos)
    except VeilError as exc:  # not an image we support, or gone: the child fails now, nothing is queued
        await _fail_child(bulks, pool, bulk, job_id, exc, None, queue_name)
        return
    try:  # once per child, however often the page runs (a repeated reservation charges nothing)
        charged = await quotas.reserve(bulk.owner, job_id, concurrency=False)
    except (InsufficientCreditsError, QuotaExceededError) as exc:
        await _fail_child(bulks, pool, bulk, job_id, exc, info, queue_name)
        return
    request = child_request(bulk, key, info)
    record = JobRecord(id=job_id, owner=bulk.owner, input=info, options=bulk.options)
    if not await bulks.jobs.put_if_absent(record) and charged:
        ended = await bulks.jobs.get(job_id)
        if ended is not None and ended.status.finished:  # refused by an earlier run of the page: no charge
            await quotas.release(bulk.owner, job_id)
    # Always enqueue: arq ignores a duplicate id, and the task skips a child that already finished.
    await enqueue_anonymize(pool, request, queue_name)


async def _fail_child(
    bulks: BulkStore,
    pool: ArqRedis,
    bulk: BulkRecord,
    job_id: str,
    exc: VeilError,
    info: InputInfo | None,
    queue_name: str,
) -> None:
    """End a child that is not queued (its object is no image we take, or its key can't pay for it)."""
    failed = JobRecord(
        id=job_id,
        owner=bulk.owner,
        status=JobStatus.FAILED,
        finished_at=utcnow(),
        input=info,
        options=bulk.options,
        error=JobError(code=exc.code, message=exc.message),
    )
    ended = failed if await bulks.jobs.put_if_absent(failed) else await bulks.jobs.get(job_id)
    if ended is not None and ended.status.finished:  # counted once, however often the page runs
        await bulks.progress.ended(bulk.id, job_id, outcome_of(ended))
    if bulk.callback_url:  # the receiver hears of every child, failed ones included
        await enqueue_delivery(pool, job_id, bulk.callback_url, queue_name)


def expand_job_id(bulk_id: str, page: int, waits: int = 0) -> str:
    job_id = f"bulk:{bulk_id}" if page == 0 else f"bulk:{bulk_id}:{page}"
    return f"{job_id}:wait{waits}" if waits else job_id


async def expand_bulk(ctx: dict[str, Any], bulk_id: str, page: int = 0, waits: int = 0) -> dict[str, Any]:
    """List one page of the bulk job's objects and queue its images; queue the next page if any.

    While the queue holds half of ``max_queued_jobs`` or more, the page waits (re-queued after
    ``QUEUE_WAIT_SECONDS``) instead: a large bulk job fills the queue only as fast as workers drain it,
    and leaves the other half to uploads, which are refused at the full limit.
    """
    state = worker_context(ctx)
    bulks = BulkStore(state.redis, state.settings.redis.prefix)
    bulk = await bulks.get(bulk_id)
    if bulk is None or bulk.status is not BulkStatus.LISTING or bulk.page != page:
        return {"status": "nothing to do"}  # a repeated delivery of a page already done
    redis_settings = state.settings.redis
    if await bulks.progress.is_cancelled(bulk.id):  # listing ends here: what is listed is all there is
        bulk.status = BulkStatus.RUNNING
        await bulks.put(bulk)
        await finish_if_done(bulks, ctx["redis"], redis_settings.queue_name, bulk.id)
        return {"status": "cancelled", "total": bulk.total}
    if redis_settings.max_queued_jobs > 0:
        queued = await ctx["redis"].zcard(redis_settings.queue_name)
        if queued >= redis_settings.max_queued_jobs // 2:
            await ctx["redis"].enqueue_job(
                EXPAND_FUNCTION,
                bulk.id,
                page,
                waits + 1,
                _job_id=expand_job_id(bulk.id, page, waits + 1),
                _queue_name=redis_settings.queue_name,
                _defer_by=QUEUE_WAIT_SECONDS,
            )
            return {"status": "waiting for room in the queue", "queued": queued}
    want = min(PAGE_SIZE, bulk.limit - bulk.listed)
    try:
        keys, more = await asyncio.to_thread(
            state.store.list_keys, bulk.source.bucket, bulk.source.prefix, want, bulk.cursor
        )
    except VeilError as exc:
        bulk.status, bulk.error = BulkStatus.FAILED, exc.message
        await bulks.put(bulk)
        await finish_if_done(bulks, ctx["redis"], redis_settings.queue_name, bulk.id)
        return {"status": "failed", "error": exc.message}

    videos = state.settings.video.enabled
    images = [key for key in keys if is_image_key(key, videos=videos)]
    queue = state.settings.redis.queue_name
    quotas = QuotaStore(state.redis, redis_settings.prefix)
    for start in range(0, len(images), PROBE_CONCURRENCY):
        chunk = images[start : start + PROBE_CONCURRENCY]
        await bulks.add_children(bulk.id, [(child_job_id(bulk.id, key), key) for key in chunk])
        await asyncio.gather(
            *(
                _queue_child(bulks, quotas, state.store, ctx["redis"], bulk, key, queue, videos=videos)
                for key in chunk
            )
        )
    bulk.listed += len(keys)
    bulk.total += len(images)
    bulk.skipped += len(keys) - len(images)
    bulk.cursor = keys[-1] if keys else bulk.cursor
    if more and bulk.listed < bulk.limit:
        bulk.page += 1
        await bulks.put(bulk)
        page_id = expand_job_id(bulk.id, bulk.page)
        await ctx["redis"].enqueue_job(
            EXPAND_FUNCTION, bulk.id, bulk.page, _job_id=page_id, _queue_name=queue
        )
        return {"status": "listing", "total": bulk.total}
    bulk.truncated = more
    bulk.status = BulkStatus.RUNNING
    await bulks.put(bulk)
    log.info("bulk %s: %s images queued (%s skipped)", bulk.id, bulk.total, bulk.skipped)
    await finish_if_done(bulks, ctx["redis"], queue, bulk.id)  # its children may all have ended already
    return {"status": "running", "total": bulk.total}


# -- what the blur task reports of a bulk job's children ----------------------------------------------------


def _bulks(state: WorkerContext) -> BulkStore:
    return BulkStore(state.redis, state.settings.redis.prefix)


async def is_cancelled(state: WorkerContext, bulk_id: str) -> bool:
    return await _bulks(state).progress.is_cancelled(bulk_id)


async def started(state: WorkerContext, bulk_id: str, job_id: str) -> None:
    await _bulks(state).progress.started(bulk_id, job_id)


async def ended(ctx: dict[str, Any], state: WorkerContext, bulk_id: str, record: JobRecord) -> None:
    """Count a finished child, and send ``bulk.finished`` if it was the last one."""
    await child_ended(_bulks(state), ctx["redis"], state.settings.redis.queue_name, bulk_id, record)
