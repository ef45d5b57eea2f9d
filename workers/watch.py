"""The watched prefix (``VEIL_WATCH__*``, docs/watch.md): bulk, continuously. An arq cron job, one poll
at a time across workers (a Redis lock), lists the prefix and moves each object one step on
(``workers/watch_steps.py``):

* a new object is probed (a ranged GET of its header) and queued as an ordinary blur job whose id is
  derived from the object's version (``shared.watch.object_job_id``) and whose blurred copy goes to the
  output: arq refuses the same id twice, a re-run of a finished job writes nothing, and a crashed
  worker's job is run again by arq (or failed by the sweeper), as for any job (workers/tasks.py);
* once its job ended, the object's done entry is written (counted once), then ``after`` is applied: the
  source is tagged ``veil-status=done|failed`` or, if its copy was written, deleted (only that version).
  A failed object is never retried automatically and never deleted.

Nothing is kept in memory between polls: what a poll did not finish (it was killed, the store was down)
the next one finds in Redis and in the listing. Each poll lists at most ``list_per_poll`` objects after
the last one it saw (from the start again once it reached the end) and queues at most
``queue_per_poll``, and none while the queue is half full (as bulk jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from redis.exceptions import LockError, RedisError

from shared.errors import NotFoundError, PermanentError, TransientError, VeilError
from shared.jobs import InputInfo, JobError, JobRecord, JobRequest, JobStatus, ObjectRef, utcnow
from shared.objectkeys import check_key
from shared.queue import enqueue_anonymize
from shared.settings import S3Location, Settings, WatchSettings
from shared.storage import Listed, ObjectStore
from shared.watch import TAG_KEY, DoneEntry, Outcome, WatchState, check_watch, object_job_id, output_key
from workers import metrics
from workers.context import WorkerContext, worker_context
from workers.imageops import probe
from workers.watch_steps import Step, next_step

log = logging.getLogger("veil.watch")

WATCH_FUNCTION = "watch_poll"
HEADER_BYTES = 256 * 1024  # as bulk jobs: JPEG EXIF blocks can push the size marker far in
CHUNK = 100  # objects looked up in Redis at once
PROBE_CONCURRENCY = 16
TAG_OF = {Outcome.SUCCEEDED: "done", Outcome.FAILED: "failed"}


def watch_cron_jobs(settings: Settings) -> list[CronJob]:
    """The poll, when a prefix is watched; :class:`shared.watch.WatchConfigError` if it must not run."""
    watch = check_watch(settings)
    if not watch.enabled:
        return []
    return [
        cron(
            watch_poll,
            name=WATCH_FUNCTION,
            second=set(range(0, 60, watch.poll_seconds)),
            run_at_startup=True,  # a restarted worker resumes at once
            timeout=settings.worker.job_timeout_seconds,
            unique=True,
            max_tries=1,
            keep_result=0,
        )
    ]


async def watch_poll(ctx: dict[str, Any]) -> dict[str, Any]:
    """The cron job: one poll, unless another worker's is still running."""
    state = worker_context(ctx)
    watch = state.settings.watch
    if watch.source is None:
        return {"status": "off"}
    memory = WatchState(state.redis, state.settings.redis.prefix, watch.source)
    timeout = state.settings.worker.job_timeout_seconds
    lock = state.redis.lock(memory.lock_key, timeout=timeout, blocking=False)
    if not await lock.acquire(blocking=False):
        return {"status": "another poll is running"}
    try:
        # Leave time to record what was done before arq's timeout cancels the poll.
        poll = Poll(state, ctx["redis"], state.store, memory, deadline=time.monotonic() + timeout / 2)
        return await poll.run()
    except (VeilError, RedisError) as exc:  # the store, the bucket or Redis is away: the next poll retries
        message = exc.message if isinstance(exc, VeilError) else f"Redis: {exc}"
        metrics.WATCH_POLL_FAILURES.inc()
        log.warning("watch: poll of %s failed: %s", watch.source.url(), message)
        return {"status": "failed", "error": message}
    finally:
        # Expired meanwhile (nothing to release), or Redis is away (it expires by itself).
        with contextlib.suppress(LockError, RedisError):
            await lock.release()


class Poll:
    """One pass over (part of) the watched prefix."""

    def __init__(
        self,
        state: WorkerContext,
        queue: ArqRedis,
        store: ObjectStore,
        memory: WatchState,
        *,
        deadline: float,
    ) -> None:
        self.state, self.queue, self.store, self.memory = state, queue, store, memory
        self.watch: WatchSettings = state.settings.watch
        assert self.watch.source is not None and self.watch.output is not None
        self.source: S3Location = self.watch.source
        self.output: S3Location = self.watch.output
        self.options = self.watch.blur_options()
        self.deadline = deadline
        self.counts: dict[str, int] = {}
        self.budget = 0
        self.previous: str | None = None  # the last key handled, in listing order
        # Once an object had to wait for queue room, the next poll starts just before it (after resume).
        self.held_back = False
        self.resume: str | None = None

    async def run(self) -> dict[str, Any]:
        self.budget = await self._room()
        cursor = await self.memory.cursor()
        listed, more = await asyncio.to_thread(
            self.store.list_objects, self.source.bucket, self.source.prefix, self.watch.list_per_poll, cursor
        )
        self.previous = cursor  # the last key handled, in listing order
        for start in range(0, len(listed), CHUNK):
            if not await self._chunk(listed[start : start + CHUNK]):  # out of time
                await self.memory.set_cursor(self.resume if self.held_back else self.previous)
                return self._report("paused", len(listed))
        if self.held_back:  # out of queue room: the next poll comes back to what waits
            await self.memory.set_cursor(self.resume)
            return self._report("paused", len(listed))
        # Reached the end of the prefix: the next poll starts from its beginning again.
        await self.memory.set_cursor(self.previous if more else None)
        return self._report("listed", len(listed))

    def _report(self, status: str, listed: int) -> dict[str, Any]:
        return {"status": status, "listed": listed, **self.counts}

    async def _room(self) -> int:
        """Jobs this poll may queue: its own bound, and none past half the queue (the rest is left to
        uploads, as bulk jobs do)."""
        limit = self.state.settings.redis.max_queued_jobs
        if limit <= 0:
            return self.watch.queue_per_poll
        queued = int(await self.queue.zcard(self.state.settings.redis.queue_name))
        return max(0, min(self.watch.queue_per_poll, limit // 2 - queued))

    async def _chunk(self, chunk: list[Listed]) -> bool:
        """Carry out each object's step; False if the poll ran out of time (the rest waits for the next).
        Objects to start past the queue room are held back; the others' steps are carried out still."""
        ids = [object_job_id(self.source.bucket, obj.key, obj.etag, obj.last_modified) for obj in chunk]
        entries = await self.memory.entries([obj.key for obj in chunk])
        records = await self.state.jobs.get_many(ids)
        now = utcnow()
        starts: list[tuple[Listed, str]] = []
        for obj, job_id, entry, record in zip(chunk, ids, entries, records, strict=True):
            step = next_step(obj.key, job_id, entry, record, self.watch.after, now)
            if step is not Step.NOTHING and time.monotonic() > self.deadline:
                await self._start_all(starts)
                return False
            if step in (Step.START, Step.REQUEUE):
                if self.budget > len(starts):
                    starts.append((obj, job_id))
                elif not self.held_back:
                    self.held_back, self.resume = True, self.previous
            elif step is Step.FINISH:
                assert record is not None
                await self._finish(obj, job_id, record)
            elif step is Step.APPLY:
                assert entry is not None
                await self._apply(obj, entry)
            elif step is Step.SKIP:
                await self._skip(obj, job_id)
            self.previous = obj.key
        await self._start_all(starts)
        return True

    # -- new objects ------------------------------------------------------------------------------------

    async def _start_all(self, starts: list[tuple[Listed, str]]) -> None:
        self.budget -= len(starts)
        for begin in range(0, len(starts), PROBE_CONCURRENCY):
            batch = starts[begin : begin + PROBE_CONCURRENCY]
            await asyncio.gather(*(self._start(obj, job_id) for obj, job_id in batch))

    async def _start(self, obj: Listed, job_id: str) -> None:
        owner, bucket = self.watch.owner, self.source.bucket
        try:
            check_key(obj.key, "key")  # before any store call: a store could read another object
            if self.watch.after == "tag" and await self._adopt_tagged(obj, job_id):
                return
            info = await asyncio.to_thread(self._probe, obj.key)
        except NotFoundError:  # deleted since it was listed: nothing to do
            return
        except TransientError as exc:  # nothing was written: the next poll starts it again
            log.warning("watch: %s/%s: %s; trying again at the next poll", bucket, obj.key, exc.message)
            return
        except PermanentError as exc:  # not canonical, or not an image we support: failed unread
            failed = JobRecord(
                id=job_id,
                owner=owner,
                status=JobStatus.FAILED,
                finished_at=utcnow(),
                options=self.options,
                error=JobError(code=exc.code, message=exc.message),
            )
            await self.state.jobs.put_if_absent(failed)
            return
        request = JobRequest(
            id=job_id,
            owner=owner,
            source=ObjectRef(bucket=self.source.bucket, key=obj.key),
            delete_source=False,  # only the watcher deletes a source, once its copy is written
            input=info,
            options=self.options,
            output=ObjectRef(bucket=self.output.bucket, key=output_key(self.source, self.output, obj.key)),
        )
        # Queued first, recorded second: a poll killed in between leaves either nothing (it starts again)
        # or a queued job, which runs without a record as well (the task rebuilds it from the payload).
        if await enqueue_anonymize(self.queue, request, self.state.settings.redis.queue_name):
            metrics.WATCH_QUEUED.inc()
            self._count("queued")
        queued = JobRecord(id=job_id, owner=owner, input=info, options=self.options)
        await self.state.jobs.put_if_absent(queued)

    def _probe(self, key: str) -> InputInfo:
        fmt, width, height = probe(self.store.get_prefix(key, HEADER_BYTES, self.source.bucket))
        return InputInfo(width=width, height=height, format=fmt)

    async def _adopt_tagged(self, obj: Listed, job_id: str) -> bool:
        """With ``after=tag``, an object tagged already was handled before (Redis forgot it): adopt it."""
        tags = await asyncio.to_thread(self.store.tags, self.source.bucket, obj.key)
        outcome = {value: outcome for outcome, value in TAG_OF.items()}.get(tags.get(TAG_KEY, ""))
        if outcome is None:
            return False
        entry = DoneEntry(job_id=job_id, outcome=outcome, applied=True)
        await self.memory.applied(obj.key, entry, deleted=False)
        self._count("adopted")
        return True

    # -- ended jobs ---------------------------------------------------------------------------------------

    async def _finish(self, obj: Listed, job_id: str, record: JobRecord) -> None:
        outcome = Outcome.SUCCEEDED if record.status is JobStatus.SUCCEEDED else Outcome.FAILED
        entry = DoneEntry(job_id=job_id, outcome=outcome, applied=self.watch.after == "keep")
        deleting = self.watch.after == "delete" and outcome is Outcome.SUCCEEDED
        if await self.memory.record(obj.key, entry, now=time.time(), deleting=deleting):
            metrics.WATCH_OBJECTS.labels(outcome.value).inc()
            self._count(outcome.value)
            if record.error is not None:
                log.warning(
                    "watch: %s/%s failed (%s: %s); it is not retried",
                    self.source.bucket,
                    obj.key,
                    record.error.code,
                    record.error.message,
                )
        if not entry.applied:
            await self._apply(obj, entry)

    async def _skip(self, obj: Listed, job_id: str) -> None:
        entry = DoneEntry(job_id=job_id, outcome=Outcome.SKIPPED, applied=True)
        if await self.memory.record(obj.key, entry, now=time.time()):
            metrics.WATCH_OBJECTS.labels(Outcome.SKIPPED.value).inc()
            self._count(Outcome.SKIPPED.value)

    async def _apply(self, obj: Listed, entry: DoneEntry) -> None:
        """Tag the source, or delete it once its blurred copy is written (a failed one is tagged, kept)."""
        bucket = self.source.bucket
        deleted = False
        try:
            check_key(obj.key, "key")  # a key the store would read as another object's is left alone
            if self.watch.after == "delete" and entry.outcome is Outcome.SUCCEEDED:
                deleted = await asyncio.to_thread(self.store.delete_version, bucket, obj.key, obj.etag)
                if not deleted:  # replaced by a new upload meanwhile: that one is new work, kept
                    log.info("watch: %s/%s was replaced before its deletion; kept", bucket, obj.key)
            elif entry.outcome in TAG_OF:
                await asyncio.to_thread(self.store.tag, bucket, obj.key, TAG_KEY, TAG_OF[entry.outcome])
        except TransientError as exc:  # the next poll tries again
            log.warning("watch: %s/%s: %s; trying again at the next poll", bucket, obj.key, exc.message)
            return
        except PermanentError as exc:  # e.g. ten tags already: the done entry alone remembers it
            log.warning("watch: %s/%s: %s; left as it is", bucket, obj.key, exc.message)
        await self.memory.applied(obj.key, entry, deleted=deleted)
        self._count(f"applied_{self.watch.after}")

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
