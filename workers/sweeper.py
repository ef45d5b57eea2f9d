"""The sweeper: ends what no worker will, and retries the deletions the store refused.

A job's record is made final by the run that ends it (workers/tasks.py), arq's job timeout included. What
is left: a job whose runs all died (the worker crashed or was killed, or lost Redis while recording the
end), which arq drops after its last try without calling the task again, so its record would stay
``running`` (or ``queued``) for the record's 48 hours. Workers index the jobs they start
(``JobStore.start``: a sorted set scored by a deadline, arq's job timeout plus a margin); every
``sweep_interval_seconds`` one worker (an arq cron job, unique) looks at the jobs past their deadline:

* arq still holds the job (``arq.jobs.Job.status``: queued, deferred for a retry, or in progress; a
  crashed worker's job waits in arq's queue for arq to run it again): its deadline moves on, and it is
  looked at again then;
* otherwise the job is failed (``JOB_TIMEOUT``) in one conditional step, so a run that ends it meanwhile
  wins, and its original, facade logo, results and bulk copy are queued for deletion; its webhook is
  queued as for any failure. The same step refunds its credit and counts it in its key's usage, once.

Then it deletes the objects whose deletion is due (``JobStore`` keeps them in a sorted set): those the
store could not delete when their job ended, and a failed job's results. A delete the store does not
confirm quickly stays queued for the next round: an answer that slow may come from a store that had
stalled, with a write from before (a cancelled job's result) still to land behind it.

:func:`sweep_expired` (hourly) deletes results and uploads past their TTL, for stores without lifecycle
rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus

from shared.bulk import BulkStore, child_ended
from shared.jobs import BlurOptions, ImageFormat, JobError, JobStatus, ObjectRef, utcnow
from shared.jobstore import RunningJob
from shared.settings import Settings
from shared.storage import ObjectStore
from workers.context import WorkerContext, worker_context
from workers.notify import enqueue_delivery
from workers.video.encode import EXTENSION as VIDEO_RESULT_EXTENSION

log = logging.getLogger("veil.sweeper")

JOB_TIMEOUT_CODE = "JOB_TIMEOUT"
# Past arq's job timeout before the sweeper looks at a job: arq runs a crashed worker's job again after
# its timeout + 10 s, and a cancelled job takes a few seconds to record its end.
DEADLINE_MARGIN_SECONDS = 15
DELETE_SECONDS = 5.0  # one delete, at most; longer: left for the next round
SETTLE_SECONDS = 2.0  # the sweeper counts a delete as done only if confirmed this fast
BATCH = 500  # jobs, and deletions, per round
DELETE_CHUNK = 32  # deletions in flight at once
LOGO_PREFIX = "logo-"  # facades' logos: <uploads prefix>logo-<hex> (gateway/routes/platerecognizer.py)
# What arq still holds: it will run the job (again), so the sweeper leaves it. ``not_found`` (gone from
# arq's queue: it finished, arq dropped it after its last try, or it expired) and ``complete`` (a result
# kept) mean no run of it is coming.
ARQ_HOLDS = frozenset({ArqStatus.queued, ArqStatus.deferred, ArqStatus.in_progress})


def job_timeout(settings: Settings, *, video: bool = False) -> int:
    """arq's timeout for a photo job, or a video job (their functions differ: workers/main.py)."""
    return settings.video.job_timeout_seconds if video else settings.worker.job_timeout_seconds


def job_deadline(
    settings: Settings, extra: float = 0.0, *, now: float | None = None, video: bool = False
) -> float:
    """When the sweeper should look at a job that starts (or is retried in ``extra`` seconds) ``now``."""
    start = time.time() if now is None else now
    return start + extra + job_timeout(settings, video=video) + DEADLINE_MARGIN_SECONDS


def result_objects(store: ObjectStore, job_id: str) -> list[ObjectRef]:
    """Every key a job's result may have (one per output format)."""
    return [
        ObjectRef(bucket=store.bucket, key=store.result_key(job_id, extension))
        for extension in [*(fmt.extension for fmt in ImageFormat), VIDEO_RESULT_EXTENSION]
    ]


def logo_objects(store: ObjectStore, options: BlurOptions) -> list[ObjectRef]:
    """A facade's logo for the job (``options.logo_key``: Plate Recognizer's ``logo``, stored by the gateway
    under the uploads prefix), deleted when the job ends like its original. Only a key the gateway could
    have written is named: never an arbitrary object a payload points at."""
    key = options.logo_key
    if key is None or not key.startswith(store.settings.uploads_prefix + LOGO_PREFIX):
        return []
    return [ObjectRef(bucket=store.bucket, key=key)]


async def delete_objects(
    state: WorkerContext, refs: Sequence[ObjectRef], *, settle: float | None = None
) -> list[ObjectRef]:
    """Delete ``refs`` now, each given :data:`DELETE_SECONDS`; returns those the store confirmed (within
    ``settle`` seconds, when given). Never raises: what is not returned was not deleted."""

    async def one(ref: ObjectRef) -> bool:
        begun = time.monotonic()
        try:
            await asyncio.wait_for(state.transfer.delete(ref.key, ref.bucket), DELETE_SECONDS)
        except Exception as exc:  # the store is down, slow or refusing: the caller keeps it for later
            log.debug("could not delete %s/%s: %s", ref.bucket, ref.key, exc)
            return False
        return settle is None or time.monotonic() - begun <= settle

    outcomes = await asyncio.gather(*(one(ref) for ref in refs))
    return [ref for ref, done in zip(refs, outcomes, strict=True) if done]


async def sweep(state: WorkerContext, queue: ArqRedis, *, now: float | None = None) -> dict[str, int]:
    """One round: fail the abandoned jobs, then the due deletions. ``now``: Unix time (tests move it).
    One round at a time across workers: a round slowed by an unreachable store is not joined by more."""
    lock = f"{state.settings.redis.prefix}:sweeper:lock"
    if not await state.redis.set(lock, state.id, nx=True, ex=state.settings.worker.job_timeout_seconds):
        return {"failed": 0, "deleted": 0}
    try:
        now = time.time() if now is None else now
        failed = await _fail_abandoned(state, queue, now)
        deleted = await _retry_deletions(state, now)
    finally:
        await state.redis.delete(lock)
    if failed or deleted:
        log.info("sweep: %d abandoned job(s) failed, %d object(s) deleted", failed, deleted)
    return {"failed": failed, "deleted": deleted}


async def sweep_jobs(ctx: dict[str, Any]) -> dict[str, int]:
    """The cron job (every ``sweep_interval_seconds``)."""
    pool = ctx["redis"]
    assert isinstance(pool, ArqRedis)
    return await sweep(worker_context(ctx), pool)


async def _fail_abandoned(state: WorkerContext, queue: ArqRedis, now: float) -> int:
    settings, jobs = state.settings, state.jobs
    failed = 0
    for job_id in await jobs.overdue(now, BATCH):
        record = await jobs.get(job_id)
        if record is None or record.status.finished:  # its record expired, or it ended after all
            await jobs.forget(job_id)
            continue
        held = await Job(job_id, queue, _queue_name=settings.redis.queue_name).status()
        if held in ARQ_HOLDS:  # a run is coming or going on: look again a job timeout later
            await jobs.postpone(job_id, job_deadline(settings, now=now))
            continue
        running = await jobs.running(job_id) or RunningJob()
        record.status = JobStatus.FAILED
        record.error = JobError(
            code=JOB_TIMEOUT_CODE,
            message="no worker finished the job within its time limit (it timed out or its worker stopped); "
            "try again later",
        )
        record.result = None
        record.finished_at = utcnow()
        delete = [
            *([running.original] if running.original else []),
            *result_objects(state.store, job_id),
            *([running.output] if running.output else []),
            *logo_objects(state.store, record.options),
        ]
        # A run that ends it meanwhile, or moves its deadline on, wins: the write is conditional.
        outcome = await jobs.fail_abandoned(record, now=now, delete=delete)
        if outcome != "ok":  # a run moved it on, or it ended meanwhile
            continue
        failed += 1
        log.warning(
            "job %s: no run finished it (%d attempts); failed %s", job_id, record.attempts, JOB_TIMEOUT_CODE
        )
        if running.callback_url:
            await enqueue_delivery(queue, job_id, running.callback_url, settings.redis.queue_name)
        # A bulk child: counted now, so bulk.finished doesn't wait for someone to read the bulk job.
        bulks = BulkStore(state.redis, settings.redis.prefix)
        bulk_id = await bulks.progress.bulk_of(job_id)
        if bulk_id:
            await child_ended(bulks, queue, settings.redis.queue_name, bulk_id, record)
    return failed


async def _retry_deletions(state: WorkerContext, now: float) -> int:
    jobs = state.jobs
    due = await jobs.due_deletions(now, BATCH)
    deleted = 0
    for start in range(0, len(due), DELETE_CHUNK):
        chunk = due[start : start + DELETE_CHUNK]
        done = await delete_objects(state, chunk, settle=SETTLE_SECONDS)
        await jobs.deleted(done)
        deleted += len(done)
        if len(done) < len(chunk):  # the store is away or stalling: the rest waits for a later round
            left = [ref for ref in due[start:] if ref not in done]
            await jobs.delete_later(left, now + state.settings.worker.job_timeout_seconds)
            break
    return deleted


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
