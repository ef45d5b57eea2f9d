"""What the worker reads and deletes in the store (docs/privacy.md): a facade's logo goes when its job
ends, like the original, whether the job succeeded or failed, also through the sweeper when the store
refused the delete or no run finished the job; and a payload naming anything in Veil's bucket but the
job's own upload (another job's upload, result or logo), or a non-canonical key, fails VALIDATION_ERROR
unread, with none of its objects deleted. Real Redis and SeaweedFS; the detectors are stand-ins."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import cv2
import numpy as np
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from cli.embedded import free_port
from shared.errors import DetectionError
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus, ObjectRef
from shared.jobstore import RunningJob, object_member
from shared.queue import open_pool
from shared.settings import Settings
from shared.storage import ObjectStore, StoredObject
from shared.transfer import ObjectTransfer
from tests.fakes import passthrough_result, worker_state
from workers.context import CTX_KEY, WorkerContext
from workers.pipeline import AnonymizeResult
from workers.sweeper import sweep
from workers.tasks import anonymize

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"
OUTPUT_BUCKET = "veil-user-output"
OPEN: list[ObjectTransfer] = []  # closed after each test


class Runner:
    """Returns the input as the "blurred" image, or fails like a detector; counts its calls."""

    def __init__(self, *, fail: bool = False) -> None:
        self.providers = ["CPUExecutionProvider"]
        self.fail = fail
        self.calls = 0
        self.logos: list[bytes | None] = []

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        self.calls += 1
        self.logos.append(kwargs.get("logo"))
        if self.fail:
            raise DetectionError("detector exploded")
        return passthrough_result(data)


class Spy(ObjectTransfer):
    """The real store through boto3, with every call the task makes on it written down."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        OPEN.append(self)
        self.calls: list[tuple[str, str | None, str]] = []

    async def get(self, key: str, bucket: str | None = None, max_bytes: int | None = None) -> StoredObject:
        self.calls.append(("get", bucket, key))
        return await super().get(key, bucket, max_bytes)

    async def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None) -> None:
        self.calls.append(("put", bucket, key))
        await super().put(key, body, content_type, bucket)

    async def delete(self, key: str, bucket: str | None = None) -> None:
        self.calls.append(("delete", bucket, key))
        await super().delete(key, bucket)


def _png(value: int = 127) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))
    assert ok
    return bytes(buf.tobytes())


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await open_pool(settings.redis)
    yield pool
    await pool.aclose()


@pytest.fixture(autouse=True)
async def close_transfers() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().close()


@pytest.fixture(scope="module")
def user_buckets(store: ObjectStore) -> None:
    for bucket in (USER_BUCKET, OUTPUT_BUCKET):
        store.create_bucket_if_missing(bucket)


def _state(
    settings: Settings, store: ObjectStore, redis: Redis, runner: Runner, **worker: Any
) -> WorkerContext:
    # Its own queue name: the sweeper asks arq about the jobs it looks at, and nothing else runs there.
    redis_settings = settings.redis.model_copy(
        update={"queue_name": f"veil:test-queue:{uuid.uuid4().hex[:8]}"}
    )
    tuned = settings.model_copy(
        update={"redis": redis_settings, "worker": settings.worker.model_copy(update=worker)}
    )
    return worker_state(tuned, redis, store, runner, transfer=Spy(store))


def _logo_key(store: ObjectStore) -> str:
    """Where the Plate Recognizer facade stores a logo (gateway/routes/platerecognizer.py)."""
    return f"{store.settings.uploads_prefix}logo-{uuid.uuid4().hex}"


async def _uploaded(state: WorkerContext, *, logo: bool = False, **request: Any) -> JobRequest:
    """A job as the gateway queues it: its upload stored, its record queued (and its logo, if any)."""
    store = state.store
    job_id = uuid.uuid4().hex
    await asyncio.to_thread(store.put, store.upload_key(job_id), _png(), "image/png")
    options = BlurOptions()
    if logo:
        key = _logo_key(store)
        await asyncio.to_thread(store.put, key, _png(200), "image/png")
        options = BlurOptions(plate_strength=5, logo_key=key)
    fields: dict[str, Any] = {
        "source": ObjectRef(bucket=store.bucket, key=store.upload_key(job_id)),
        "options": options,
        **request,
    }
    job = JobRequest(
        id=job_id,
        owner=f"owner-{job_id}",
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        **fields,
    )
    await state.jobs.put(JobRecord(id=job_id, owner=job.owner, input=job.input, options=job.options))
    return job


def _results(store: ObjectStore, job_id: str) -> list[str]:
    keys = [store.result_key(job_id, ext) for ext in ("jpg", "png", "webp")]
    return [key for key in keys if store.exists(key)]


def _logo(job: JobRequest) -> str:
    assert job.options.logo_key is not None
    return job.options.logo_key


# -- a facade's logo goes with its job ----------------------------------------------------------------------


@pytest.mark.parametrize("fail", [False, True], ids=["succeeded", "failed"])
async def test_the_worker_deletes_the_facade_logo_when_the_job_ends(
    settings: Settings, store: ObjectStore, redis: Redis, fail: bool
) -> None:
    runner = Runner(fail=fail)
    state = _state(settings, store, redis, runner)
    job = await _uploaded(state, logo=True)
    outcome = await anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json"))
    assert outcome["status"] == ("failed" if fail else "succeeded")
    assert runner.logos == [_png(200)]  # the worker did use it
    assert not store.exists(_logo(job))
    assert not store.exists(job.source.key)
    logo_member = object_member(ObjectRef(bucket=store.bucket, key=_logo(job)))
    assert await redis.zscore(state.jobs.deletions_key, logo_member) is None
    assert _results(store, job.id) == ([] if fail else [store.result_key(job.id, "png")])
    store.delete(store.result_key(job.id, "png"))


async def test_a_logo_the_store_could_not_delete_waits_in_redis_for_the_sweeper(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    dead = ObjectStore(settings.s3.model_copy(update={"endpoint_url": f"http://127.0.0.1:{free_port()}"}))
    up = _state(settings, store, redis, Runner(), max_tries=1)
    down = _state(up.settings, dead, redis, Runner(), max_tries=1)
    job = await _uploaded(up, logo=True)
    outcome = await anonymize({CTX_KEY: down, "job_try": 1}, job.model_dump(mode="json"))
    assert outcome["status"] == "failed"  # STORE_UNAVAILABLE on its last try
    member = object_member(ObjectRef(bucket=store.bucket, key=_logo(job)))
    assert store.exists(_logo(job))
    assert await redis.zscore(up.jobs.deletions_key, member) is not None
    report = await sweep(up, queue, now=time.time() + 7200)
    assert report["deleted"] >= 2  # the original and the logo
    assert not store.exists(_logo(job)) and not store.exists(job.source.key)
    assert await redis.zscore(up.jobs.deletions_key, member) is None


async def test_the_sweeper_deletes_the_logo_of_an_abandoned_job(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis
) -> None:
    # Every run died (the worker was killed) and arq gave up: no run will ever end the job.
    state = _state(settings, store, redis, Runner())
    job = await _uploaded(state, logo=True)
    record = await state.jobs.get(job.id)
    assert record is not None
    record.status, record.started_at, record.attempts = JobStatus.RUNNING, record.created_at, 3
    assert (
        await state.jobs.start(record, deadline=time.time() - 1, running=RunningJob(original=job.source))
        is None
    )

    report = await sweep(state, queue)

    assert report["failed"] == 1
    record = await state.jobs.get(job.id)
    assert record is not None and record.status is JobStatus.FAILED
    assert not store.exists(_logo(job)) and not store.exists(job.source.key)


# -- a payload that names what is not its own is refused unread --------------------------------------------


async def _victim(state: WorkerContext) -> tuple[JobRequest, str, str]:
    """Another client's job: its upload, its result and its logo, all in Veil's bucket."""
    victim = await _uploaded(state, logo=True)
    result = state.store.result_key(victim.id, "jpg")
    await asyncio.to_thread(state.store.put, result, _png(), "image/jpeg")
    return victim, result, _logo(victim)


@pytest.mark.parametrize(
    "case",
    [
        "another upload",
        "another upload, kept",
        "another result",
        "another logo",
        "a dot-dot path to another upload",
        "a client bucket key climbing into Veil's bucket",
        "a client object to delete",
        "a copy into Veil's bucket",
        "a logo key climbing into another upload",
    ],
)
async def test_a_payload_naming_what_is_not_its_own_fails_unread(
    settings: Settings, store: ObjectStore, redis: Redis, user_buckets: None, case: str
) -> None:
    runner = Runner()
    state = _state(settings, store, redis, runner)
    victim, result, logo = await _victim(state)
    own, uploads = store.bucket, store.settings.uploads_prefix
    user_key = f"photos/{uuid.uuid4().hex}.png"
    await asyncio.to_thread(store.put, user_key, _png(), "image/png", USER_BUCKET)
    job_id = uuid.uuid4().hex
    await asyncio.to_thread(store.put, store.upload_key(job_id), _png(), "image/png")
    mine = ObjectRef(bucket=own, key=store.upload_key(job_id))
    cases: dict[str, dict[str, Any]] = {
        "another upload": {"source": victim.source},
        "another upload, kept": {"source": victim.source, "delete_source": False},
        "another result": {"source": ObjectRef(bucket=own, key=result), "delete_source": False},
        "another logo": {"source": ObjectRef(bucket=own, key=logo)},
        "a dot-dot path to another upload": {
            "source": ObjectRef(bucket=own, key=f"{uploads}{job_id}/../{victim.id}")
        },
        "a client bucket key climbing into Veil's bucket": {
            "source": ObjectRef(bucket=USER_BUCKET, key=f"x/../../{own}/{victim.source.key}"),
            "delete_source": False,
        },
        "a client object to delete": {"source": ObjectRef(bucket=USER_BUCKET, key=user_key)},
        "a copy into Veil's bucket": {
            "source": ObjectRef(bucket=USER_BUCKET, key=user_key),
            "delete_source": False,
            "output": ObjectRef(bucket=own, key=result),
        },
        "a logo key climbing into another upload": {
            "source": mine,
            "options": BlurOptions(plate_strength=5, logo_key=f"{uploads}logo-x/../{victim.id}"),
        },
    }
    payload = cases[case]
    request = JobRequest(
        id=job_id,
        owner="attacker",
        input=InputInfo(width=8, height=8, format=ImageFormat.PNG),
        **payload,
    )
    await state.jobs.put(JobRecord(id=job_id, owner="attacker", input=request.input, options=request.options))

    outcome = await anonymize({CTX_KEY: state, "job_try": 1}, request.model_dump(mode="json"))

    assert outcome["status"] == "failed"
    record = await state.jobs.get(job_id)
    assert record is not None and record.status is JobStatus.FAILED and record.result is None
    assert record.error is not None and record.error.code == "VALIDATION_ERROR"
    assert record.error.message.startswith("refused: ")
    assert runner.calls == 0
    spy = state.transfer
    assert isinstance(spy, Spy) and spy.calls == []  # nothing read, written or deleted
    # Everything the payload named is still there, untouched.
    assert store.exists(victim.source.key) and store.exists(result) and store.exists(logo)
    assert store.exists(user_key, USER_BUCKET)
    assert _results(store, job_id) == []
    for ref in (
        victim.source,
        ObjectRef(bucket=own, key=result),
        ObjectRef(bucket=own, key=logo),
        ObjectRef(bucket=USER_BUCKET, key=user_key),
    ):
        assert await redis.zscore(state.jobs.deletions_key, object_member(ref)) is None
    assert not await redis.zscore(state.jobs.deadlines_key, job_id)  # never started, nothing to sweep
    for key in (victim.source.key, result, logo, store.upload_key(job_id)):
        store.delete(key)
    store.delete(user_key, USER_BUCKET)


async def test_a_logo_key_outside_the_logos_is_neither_used_nor_deleted(
    settings: Settings, store: ObjectStore, redis: Redis
) -> None:
    # Canonical, so not refused up front; but only the gateway's logo-<hex> keys are ever read or deleted.
    runner = Runner()
    state = _state(settings, store, redis, runner)
    victim, result, logo = await _victim(state)
    job = await _uploaded(state, options=BlurOptions(plate_strength=5, logo_key=victim.source.key))
    outcome = await anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json"))
    assert outcome["status"] == "failed"
    record = await state.jobs.get(job.id)
    assert record is not None and record.error is not None and record.error.code == "VALIDATION_ERROR"
    assert runner.calls == 0
    assert store.exists(victim.source.key)  # not read into the job, not deleted with it
    assert not store.exists(job.source.key)  # the job's own upload goes as usual
    for key in (victim.source.key, result, logo):
        store.delete(key)


async def test_a_bulk_child_reads_the_clients_object_and_never_deletes_it(
    settings: Settings, store: ObjectStore, redis: Redis, user_buckets: None
) -> None:
    # What the gateway and bulk listing queue still runs: a canonical key in a client's bucket, a copy into
    # a writable one, the source kept.
    state = _state(settings, store, redis, Runner())
    key = f"claims/{uuid.uuid4().hex}.png"
    await asyncio.to_thread(store.put, key, _png(), "image/png", USER_BUCKET)
    job = await _uploaded(
        state,
        source=ObjectRef(bucket=USER_BUCKET, key=key),
        delete_source=False,
        output=ObjectRef(bucket=OUTPUT_BUCKET, key=f"blurred/{key}"),
    )
    outcome = await anonymize({CTX_KEY: state, "job_try": 1}, job.model_dump(mode="json"))
    assert outcome["status"] == "succeeded"
    assert store.exists(key, USER_BUCKET)
    assert store.exists(f"blurred/{key}", OUTPUT_BUCKET)
    store.delete(key, USER_BUCKET)
    store.delete(f"blurred/{key}", OUTPUT_BUCKET)
    store.delete(store.result_key(job.id, "png"))
    store.delete(store.upload_key(job.id))  # stored by _uploaded, not this job's source


async def test_a_failed_bulk_childs_copy_from_an_earlier_run_is_deleted(
    settings: Settings, store: ObjectStore, redis: Redis, queue: ArqRedis, user_buckets: None
) -> None:
    # An earlier run wrote the blurred copy into the client's bucket, then died; this run fails: a failed
    # job keeps no result, in Veil's bucket or the client's. It may still be landing, so the sweeper takes it.
    state = _state(settings, store, redis, Runner(fail=True))
    key = f"claims/{uuid.uuid4().hex}.png"
    await asyncio.to_thread(store.put, key, _png(), "image/png", USER_BUCKET)
    copy = ObjectRef(bucket=OUTPUT_BUCKET, key=f"blurred/{key}")
    job = await _uploaded(
        state, source=ObjectRef(bucket=USER_BUCKET, key=key), delete_source=False, output=copy
    )
    await asyncio.to_thread(store.put, copy.key, _png(), "image/png", OUTPUT_BUCKET)
    record = await state.jobs.get(job.id)
    assert record is not None
    record.attempts = 1  # the run that died
    await state.jobs.put(record)

    outcome = await anonymize({CTX_KEY: state, "job_try": 2}, job.model_dump(mode="json"))

    assert outcome["status"] == "failed"
    assert await redis.zscore(state.jobs.deletions_key, object_member(copy)) is not None
    await sweep(state, queue, now=time.time() + state.settings.worker.job_timeout_seconds + 1)
    assert not store.exists(copy.key, OUTPUT_BUCKET)
    assert store.exists(key, USER_BUCKET)  # the client's original is never deleted
    store.delete(key, USER_BUCKET)
    store.delete(store.upload_key(job.id))
