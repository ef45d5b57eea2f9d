"""The watched prefix (workers/watch.py) against the session's real Redis and SeaweedFS.

In-process (a stand-in detector, arq's queue read through its public API): each ``after`` mode, failed
and skipped objects, new uploads under a used key, the poll's bounds and its lock. Then the real thing: a
worker process with the models, 50 objects dropped into the watched prefix, the worker SIGKILLed in the
middle and started again: every object blurred and deleted exactly once.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from cli.embedded import Service
from cli.stack import start_veil_process
from shared.errors import DetectionError
from shared.jobs import BlurOptions, JobStatus
from shared.jobstore import JobStore
from shared.queue import ANONYMIZE_FUNCTION, open_pool
from shared.settings import S3Location, Settings, WatchSettings
from shared.storage import ObjectStore
from shared.watch import TAG_KEY, DoneEntry, Outcome, WatchState, object_job_id
from tests.fakes import passthrough_result, worker_state
from tests.images import astronaut_bgr
from workers.context import CTX_KEY, WorkerContext
from workers.metrics import REGISTRY
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize
from workers.watch import watch_poll

pytestmark = pytest.mark.integration

SOURCE_BUCKET = "veil-user-bucket"  # readable and writable buckets of the session's settings
OUTPUT_BUCKET = "veil-user-output"
FAIL_MARK = 13  # a PNG of this grey value makes the stand-in detector fail


def _png(value: int = 127, side: int = 8) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((side, side, 3), value, np.uint8))
    assert ok
    return bytes(buf.tobytes())


class Runner:
    """Returns the input as the "blurred" image; fails like a detector on a PNG of :data:`FAIL_MARK`."""

    def __init__(self) -> None:
        self.providers = ["CPUExecutionProvider"]

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        if data == _png(FAIL_MARK):
            raise DetectionError("detector exploded")
        return passthrough_result(data)


class Watched:
    """One watched location of its own, a worker state on a queue of its own, and the queued jobs run
    in-process as arq would run them."""

    def __init__(self, state: WorkerContext, pool: ArqRedis, store: ObjectStore) -> None:
        self.state, self.pool, self.store = state, pool, store
        watch = state.settings.watch
        assert watch.source is not None and watch.output is not None
        self.source, self.output = watch.source, watch.output
        self.memory = WatchState(state.redis, state.settings.redis.prefix, self.source)
        self.ran: set[str] = set()
        self.ctx: dict[str, Any] = {CTX_KEY: state, "redis": pool, "job_try": 1}

    async def poll(self) -> dict[str, Any]:
        return await watch_poll(self.ctx)

    async def run_queued(self) -> int:
        """Run the blur jobs queued so far, each once; returns how many ran."""
        jobs = await self.pool.queued_jobs(queue_name=self.state.settings.redis.queue_name)
        fresh = [job for job in jobs if job.function == ANONYMIZE_FUNCTION and job.job_id not in self.ran]
        for job in fresh:
            assert job.job_id is not None
            self.ran.add(job.job_id)
            await anonymize(dict(self.ctx), *job.args)
            # Out of the queue's sorted set, as arq takes an ended job (its job key stays: arq would
            # refuse the id while it held it anyway).
            await self.pool.zrem(self.state.settings.redis.queue_name, job.job_id)
        return len(fresh)

    async def cycle(self) -> dict[str, Any]:
        """Poll (queue), run what was queued, poll again (finish)."""
        await self.poll()
        await self.run_queued()
        return await self.poll()

    def put(self, name: str, body: bytes, content_type: str = "image/png") -> str:
        key = self.source.prefix + name
        self.store.put(key, body, content_type, SOURCE_BUCKET)
        return key

    def sources(self) -> list[str]:
        return self.store.list_keys(SOURCE_BUCKET, self.source.prefix, 1000)[0]

    def outputs(self) -> list[str]:
        return self.store.list_keys(OUTPUT_BUCKET, self.output.prefix, 1000)[0]


@pytest.fixture
async def watched(
    request: pytest.FixtureRequest, settings: Settings, store: ObjectStore, redis: Redis
) -> AsyncIterator[Any]:
    """``watched(after=..., **watch settings)``: a :class:`Watched` on a fresh prefix; cleaned up after."""
    made: list[Watched] = []
    pools: list[ArqRedis] = []

    async def make(max_queued_jobs: int = 10_000, **watch: Any) -> Watched:
        run = uuid.uuid4().hex[:8]
        fields = {
            "source": S3Location(bucket=SOURCE_BUCKET, prefix=f"watch-{run}/in/"),
            "output": S3Location(bucket=OUTPUT_BUCKET, prefix=f"watch-{run}/out/"),
            **watch,
        }
        tuned = settings.model_copy(
            update={
                "watch": WatchSettings.model_validate(fields),
                "redis": settings.redis.model_copy(
                    update={"queue_name": f"veil:test-watch:{run}", "max_queued_jobs": max_queued_jobs}
                ),
            }
        )
        pool = await open_pool(tuned.redis)
        pools.append(pool)
        made.append(Watched(worker_state(tuned, redis, store, Runner()), pool, store))
        return made[-1]

    yield make
    for one in made:
        for bucket, prefix in ((SOURCE_BUCKET, one.source.prefix), (OUTPUT_BUCKET, one.output.prefix)):
            for key in store.list_keys(bucket, prefix, 1000)[0]:
                store.delete(key, bucket)
        await one.state.transfer.close()
    for pool in pools:
        await pool.aclose()


def _counted(outcome: Outcome) -> float:
    """The worker's ``veil_watch_objects_total`` for ``outcome``."""
    return REGISTRY.get_sample_value("veil_watch_objects_total", {"outcome": outcome.value}) or 0.0


async def test_keep_blurs_each_object_once_and_remembers_failures_and_skips(watched: Any) -> None:
    w: Watched = await watched(after="keep")
    for name in ("a.png", "sub/b.png"):
        w.put(name, _png())
    w.put("notes.txt", b"not an image", "text/plain")
    w.put("broken.jpg", b"\xff\xd8 not really a jpeg", "image/jpeg")
    w.put("boom.png", _png(FAIL_MARK))

    before = {outcome: _counted(outcome) for outcome in Outcome}
    first = await w.poll()
    assert first["queued"] == 3  # a, b and boom; broken failed unread, notes is not an image
    assert await w.run_queued() == 3
    await w.poll()
    assert await w.memory.stats() == {"succeeded": 2, "failed": 2, "skipped": 1}
    assert {outcome: _counted(outcome) - before[outcome] for outcome in Outcome} == {
        Outcome.SUCCEEDED: 2,
        Outcome.FAILED: 2,
        Outcome.SKIPPED: 1,
    }
    assert sorted(w.outputs()) == [w.output.prefix + "a.png", w.output.prefix + "sub/b.png"]
    assert len(w.sources()) == 5  # keep: nothing deleted
    failed = await w.state.redis.zrange(w.memory.failed_key, 0, -1)
    assert sorted(failed) == [f"{w.source.prefix}{n}".encode() for n in ("boom.png", "broken.jpg")]

    # Nothing new: nothing queued, nothing counted again, however often it polls.
    for _ in range(2):
        again = await w.poll()
        assert "queued" not in again and again["status"] == "listed"
    assert await w.run_queued() == 0
    assert await w.memory.stats() == {"succeeded": 2, "failed": 2, "skipped": 1}

    # A new upload under a key it blurred before is new work; the failed ones are not retried.
    w.put("a.png", _png(200))
    assert (await w.poll())["queued"] == 1
    await w.run_queued()
    await w.poll()
    assert await w.memory.stats() == {"succeeded": 3, "failed": 2, "skipped": 1}
    assert w.store.get(w.output.prefix + "a.png", OUTPUT_BUCKET).body == _png(200)


async def test_tag_marks_sources_and_is_how_done_is_recognised(watched: Any, store: ObjectStore) -> None:
    w: Watched = await watched(after="tag")
    ok = w.put("ok.png", _png())
    boom = w.put("boom.png", _png(FAIL_MARK))
    tagger = store
    tagger.tag(SOURCE_BUCKET, ok, "owner", "claims")  # the client's own tag stays

    await w.cycle()
    assert tagger.tags(SOURCE_BUCKET, ok) == {"owner": "claims", TAG_KEY: "done"}
    assert tagger.tags(SOURCE_BUCKET, boom) == {TAG_KEY: "failed"}
    assert w.outputs() == [w.output.prefix + "ok.png"]  # a failure leaves no output
    assert await w.memory.stats() == {"succeeded": 1, "failed": 1}

    # Redis forgets (a new deployment, a flushed database): the tags still say what was done.
    for job_id in w.ran:
        await w.state.jobs.delete(job_id)
    for key in (ok, boom):
        await w.state.redis.delete(w.memory.entry_key(key))
    adopted = await w.poll()
    assert adopted.get("adopted") == 2 and "queued" not in adopted
    assert await w.run_queued() == 0


async def test_delete_removes_only_sources_whose_copy_was_written(watched: Any, store: ObjectStore) -> None:
    w: Watched = await watched(after="delete")
    w.put("one.png", _png(1))
    w.put("two.png", _png(2))
    boom = w.put("boom.png", _png(FAIL_MARK))

    result = await w.cycle()
    assert result["applied_delete"] == 3
    assert w.sources() == [boom]  # a failed source is kept, tagged, never deleted
    assert store.tags(SOURCE_BUCKET, boom) == {TAG_KEY: "failed"}
    assert sorted(w.outputs()) == [w.output.prefix + "one.png", w.output.prefix + "two.png"]
    entries = await w.memory.entries([w.source.prefix + "one.png", boom])
    assert [(e.outcome, e.applied) for e in entries if e] == [
        (Outcome.SUCCEEDED, True),
        (Outcome.FAILED, True),
    ]
    assert await w.state.redis.ttl(w.memory.entry_key(w.source.prefix + "one.png")) > 0  # forgotten later

    # The same bytes dropped again under the same key: a new object, blurred and deleted again.
    await asyncio.sleep(1.1)  # the store's last-modified has whole seconds
    w.put("one.png", _png(1))
    await w.cycle()
    assert w.sources() == [boom]
    assert await w.memory.stats() == {"succeeded": 3, "failed": 1}


async def test_a_replaced_source_is_not_deleted_unblurred(watched: Any, store: ObjectStore) -> None:
    w: Watched = await watched(after="delete")
    key = w.put("a.png", _png(1))
    listed = store.list_objects(SOURCE_BUCKET, w.source.prefix, 10)[0][0]
    await asyncio.sleep(1.1)  # a new last-modified second
    w.put("a.png", _png(2))  # replaced after its listing, before its deletion
    assert not store.delete_version(SOURCE_BUCKET, key, listed.etag)
    assert w.sources() == [key]
    fresh = store.list_objects(SOURCE_BUCKET, w.source.prefix, 10)[0][0]
    assert object_job_id(SOURCE_BUCKET, key, fresh.etag, fresh.last_modified) != object_job_id(
        SOURCE_BUCKET, key, listed.etag, listed.last_modified
    )
    assert store.delete_version(SOURCE_BUCKET, key, fresh.etag)
    assert store.delete_version(SOURCE_BUCKET, key, fresh.etag)  # gone is gone


async def test_polls_are_bounded_and_resume_where_they_stopped(watched: Any) -> None:
    w: Watched = await watched(after="keep", list_per_poll=2)
    for index in range(5):
        w.put(f"{index}.png", _png(100 + index))
    queued = [(await w.poll()).get("queued", 0) for _ in range(3)]
    assert queued == [2, 2, 1]  # two per poll, each after the last, and the third reached the end
    assert await w.memory.cursor() is None  # the next poll starts from the beginning again
    assert await w.run_queued() == 5

    v: Watched = await watched(after="keep", queue_per_poll=3)
    for index in range(5):
        v.put(f"{index}.png", _png(100 + index))
    first = await v.poll()
    assert (first["status"], first["queued"]) == ("paused", 3)
    assert await v.memory.cursor() == v.source.prefix + "2.png"
    assert (await v.poll())["queued"] == 2


async def test_nothing_is_queued_while_the_queue_is_half_full(watched: Any) -> None:
    w: Watched = await watched(after="delete", max_queued_jobs=4)
    w.put("a.png", _png(1))
    await w.poll()
    await w.run_queued()
    w.put("b.png", _png(2))
    queue = w.state.settings.redis.queue_name
    await w.pool.zadd(queue, {"stand-in-1": 0, "stand-in-2": 0})  # others' jobs: half the limit
    held = await w.poll()
    assert held["status"] == "paused" and "queued" not in held
    assert await w.pool.zcard(queue) == 2
    # What waits for room does not hold up the rest: a's job ended, so a is finished and deleted.
    assert (held["succeeded"], held["applied_delete"]) == (1, 1)
    assert w.sources() == [w.source.prefix + "b.png"]
    await w.pool.zrem(queue, "stand-in-1")
    assert (await w.poll())["queued"] == 1


async def test_one_poll_at_a_time_and_a_missing_bucket_is_reported(watched: Any) -> None:
    w: Watched = await watched(after="keep")
    w.put("a.png", _png())
    await w.state.redis.set(w.memory.lock_key, "another worker", ex=30)
    assert await w.poll() == {"status": "another poll is running"}
    await w.state.redis.delete(w.memory.lock_key)
    assert (await w.poll())["queued"] == 1

    gone: Watched = await watched(source=S3Location(bucket="veil-no-such-bucket", prefix="in/"))
    reply = await gone.poll()
    assert reply["status"] == "failed" and "not found" in reply["error"]


# -- the real worker, killed in the middle -----------------------------------------------------------------

COUNT = 50


def _photo(index: int) -> bytes:
    """A small JPEG with a face: the astronaut at 96 px, a different crop each time."""
    face = astronaut_bgr()[index % 20 : 300 + index % 20, 100:400]
    ok, buf = cv2.imencode(".jpg", cv2.resize(face, (96, 96)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf.tobytes())


def _wait(what: str, check: Any, timeout: float, worker: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited: {worker.log.read_text(errors='replace')[-3000:]}")
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.fixture
def worker_env(stack_env: dict[str, str], settings: Settings) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        **stack_env,
        # Its own database: no other test's jobs, and no other worker on its queue.
        "VEIL_REDIS__URL": settings.redis.url.rsplit("/", 1)[0] + "/2",
        "VEIL_WORKER__PROVIDERS": "CPUExecutionProvider",
        # A killed worker's jobs run again after arq's longest task timeout (webhooks' 30 s) + 10 s.
        "VEIL_WORKER__JOB_TIMEOUT_SECONDS": "20",
        "VEIL_WATCH__SOURCE": f"s3://{SOURCE_BUCKET}/watch-{run}/incoming/",
        "VEIL_WATCH__OUTPUT": f"s3://{OUTPUT_BUCKET}/watch-{run}/blurred/",
        "VEIL_WATCH__AFTER": "delete",
        "VEIL_WATCH__POLL_SECONDS": "1",
    }


@pytest.mark.models
@pytest.mark.timeout(600)
def test_fifty_objects_each_blurred_once_across_a_sigkilled_worker(
    worker_env: dict[str, str], store: ObjectStore, tmp_path: Path
) -> None:
    source = S3Location(bucket=SOURCE_BUCKET, prefix=worker_env["VEIL_WATCH__SOURCE"].split("/", 3)[3])
    output_prefix = worker_env["VEIL_WATCH__OUTPUT"].split("/", 3)[3]
    keys = [f"{source.prefix}{index // 10}/photo-{index:02d}.jpg" for index in range(COUNT)]
    redis_url = worker_env["VEIL_REDIS__URL"]

    lister = store

    async def read(job_ids: list[str] | None = None) -> tuple[dict[str, int], list[Any]]:
        redis = Redis.from_url(redis_url)
        try:
            stats = await WatchState(redis, "veil", source).stats()
            records = await JobStore(redis, "veil").get_many(job_ids) if job_ids else []
            return stats, records
        finally:
            await redis.aclose()

    async def entries() -> list[DoneEntry | None]:
        redis = Redis.from_url(redis_url)
        try:
            return await WatchState(redis, "veil", source).entries(keys)
        finally:
            await redis.aclose()

    def drop(key: str) -> None:
        """Store one photo, and name its job as the poll will (from the listing)."""
        store.put(key, _photo(len(job_ids)), "image/jpeg", SOURCE_BUCKET)
        listed = lister.list_objects(SOURCE_BUCKET, key, 1)[0][0]
        job_ids.append(object_job_id(SOURCE_BUCKET, key, listed.etag, listed.last_modified))

    def succeeded() -> int:
        return asyncio.run(read())[0].get("succeeded", 0)

    first = start_veil_process("worker", "workers", worker_env, tmp_path)
    second: Service | None = None
    job_ids: list[str] = []
    try:
        _wait("the worker was not ready", lambda: "ready on" in first.log.read_text(), 240, first)
        for key in keys[:30]:
            drop(key)

        def some_done_and_some_running() -> bool:
            stats, records = asyncio.run(read(job_ids))
            running = any(r is not None and r.status is JobStatus.RUNNING for r in records)
            return stats.get("succeeded", 0) >= 5 and running

        _wait("no object was done while others ran", some_done_and_some_running, 240, first)
        first.proc.kill()  # SIGKILL: no hand-back, no clean-up
        first.proc.wait(10)
        done_at_kill = succeeded()
        for key in keys[30:]:  # dropped while no worker runs
            drop(key)

        second = start_veil_process("worker-restarted", "workers", worker_env, tmp_path)
        _wait(f"not all {COUNT} were done", lambda: succeeded() >= COUNT, 420, second)
        time.sleep(3)  # a few more polls: nothing may be counted twice
        stats, records = asyncio.run(read(job_ids))
        done = asyncio.run(entries())
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()

    assert stats == {"succeeded": COUNT}, stats  # each object counted once, none failed or skipped
    assert [(e.job_id, e.outcome) if e else None for e in done] == [
        (job_id, Outcome.SUCCEEDED) for job_id in job_ids
    ]
    # A poll killed between a delete and marking it applied leaves the mark undone (the source is gone,
    # so no poll comes back to it); the entry expires all the same.
    unmarked = sum(1 for e in done if e is not None and not e.applied)
    assert unmarked <= 1, done
    expected = sorted(output_prefix + key.removeprefix(source.prefix) for key in keys)
    outputs = store.list_keys(OUTPUT_BUCKET, output_prefix, 1000)[0]
    assert outputs == expected  # every copy, once each
    for key in outputs[:3]:
        assert store.get(key, OUTPUT_BUCKET).body[:2] == b"\xff\xd8"
    assert store.list_keys(SOURCE_BUCKET, source.prefix, 1000)[0] == []  # every source deleted
    assert all(r is not None and r.status is JobStatus.SUCCEEDED for r in records), records
    logs = first.log.read_text(errors="replace") + (second.log.read_text(errors="replace") if second else "")
    twice = [job_id for job_id in job_ids if logs.count(f"job {job_id} succeeded") != 1]
    assert not twice, f"jobs not logged succeeded exactly once: {twice}"
    rerun = [r for r in records if r is not None and r.attempts > 1]
    assert rerun, "no job was interrupted by the kill; the kill came too late"
    print(
        f"\n[watch kill] {COUNT} objects: {done_at_kill} done at the kill, {len(rerun)} run again after it,"
        f" {unmarked} deletion unmarked; each blurred, copied and deleted once"
    )
    for key in outputs:
        store.delete(key, OUTPUT_BUCKET)
