"""Turning an image and options into a queued job, and waiting for it: the one submission path every
HTTP surface (the native API and later facades) goes through.

``submit`` checks the image (format, wholeness, pixel limits: :mod:`gateway.imagecheck`, from headers and
file structure, never by decoding) before anything is stored; once the upload is in the store, any failure
removes it again, so a refused job leaves nothing behind. At most one check per core runs at once, so a
burst of large uploads cannot pile up their memory in the checks. Every store call goes through
:class:`ObjectTransfer`, bounded by ``VEIL_S3__REQUEST_TIMEOUT_SECONDS``: a store that stops answering
is a 503 within that, not a request held open for the outage.

Videos (``videos=True``: ``POST /v1/jobs`` only; the vendor facades take photos) are checked by
:mod:`gateway.videocheck` under their own limits (``VEIL_LIMITS__MAX_VIDEO_BYTES``, ``VEIL_VIDEO__*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid

from arq.connections import ArqRedis

from gateway.admission import Admission
from gateway.backends import redis_errors
from gateway.imagecheck import inspect_image
from gateway.jobwatch import FinishedJobs
from gateway.videocheck import VideoLimits, inspect_video
from shared.errors import (
    NotFoundError,
    PayloadTooLargeError,
    QueueUnavailableError,
    UnsupportedMediaError,
    ValidationError,
    VeilError,
)
from shared.imageformat import sniff_format, sniff_video
from shared.jobs import BlurOptions, ImageFormat, InputInfo, JobRecord, JobRequest, JobStatus, ObjectRef
from shared.jobstore import JobStore, finished_channel
from shared.objectkeys import check_key
from shared.queue import enqueue_anonymize
from shared.quotas import QuotaStore
from shared.settings import LimitSettings, Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"[0-9a-f]{32}")


async def inspect(data: bytes, limits: LimitSettings) -> InputInfo:
    """:func:`inspect_image`, off the event loop for PNG and WebP (Pillow's WebP parser copies the whole
    file; a PNG's chunks are walked to its end). A JPEG is only walked and its headers parsed (~0.5 ms):
    inline, as the hop to a thread and back costs ~0.15 ms of CPU itself."""
    if sniff_format(data) is ImageFormat.JPEG:
        return inspect_image(data, limits)
    return await asyncio.to_thread(inspect_image, data, limits)


async def inspect_media(data: bytes, settings: Settings, *, videos: bool) -> InputInfo:
    """:func:`inspect`, or with ``videos`` a video's :func:`inspect_video` (in a thread: it decodes the
    first frame); 415 naming both kinds for what is neither."""
    if not videos:
        return await inspect(data, settings.limits)
    if (video := sniff_video(data)) is not None:
        if not settings.video.enabled:
            raise UnsupportedMediaError(
                f"{video.name} video jobs are off on this deployment (VEIL_VIDEO__ENABLED); "
                "send JPEG, PNG or WebP"
            )
        return await asyncio.to_thread(inspect_video, data, VideoLimits.from_settings(settings))
    if data and sniff_format(data) is None:
        try:
            return await inspect(data, settings.limits)  # names what it is where it knows (GIF, SVG...)
        except UnsupportedMediaError as exc:
            if exc.message.startswith("not a supported image"):
                raise UnsupportedMediaError(f"not a supported image or video; send {MEDIA_KINDS}") from exc
            raise
    return await inspect(data, settings.limits)


MEDIA_KINDS = "JPEG, PNG, WebP, MP4, MOV, MKV or WebM"


def check_slots() -> int:
    """Image checks run at once: one per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobSubmitter:
    """Submits jobs for an owner (an API key id) and reads them back; a job is visible to its owner only."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        redis: ArqRedis,
        *,
        poll_interval: float = 0.075,
        fallback_interval: float = 5.0,
        checks: asyncio.Semaphore | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._transfer = ObjectTransfer.open(store)
        # Image checks in flight at once (one per core unless the caller shares its own slots).
        self._checks = checks or asyncio.Semaphore(check_slots())
        self._redis = redis
        self._jobs = JobStore(redis, settings.redis.prefix)
        self._admission = Admission(redis, settings)
        self._quotas = QuotaStore(redis, settings.redis.prefix)
        self._finished = FinishedJobs(redis, finished_channel(settings.redis.prefix))
        # Re-reading a waited-for record: every poll_interval while job notifications are not available,
        # every fallback_interval while they are: a safety net only (a renewed subscription wakes every
        # waiter anyway), e.g. for records written by an older worker that does not announce them.
        self.poll_interval = poll_interval
        self.fallback_interval = fallback_interval

    async def close(self) -> None:
        await self._finished.close()
        await self._transfer.close()

    @property
    def jobs(self) -> JobStore:
        return self._jobs

    @property
    def quotas(self) -> QuotaStore:
        return self._quotas

    @property
    def transfer(self) -> ObjectTransfer:
        """The store's image bytes on the event loop, each call bounded (see the module's text)."""
        return self._transfer

    async def inspect(self, data: bytes, *, videos: bool = False) -> InputInfo:
        """:func:`inspect_media` under the submitter's limit on checks running at once."""
        async with self._checks:
            return await inspect_media(data, self._settings, videos=videos)

    async def submit(
        self,
        owner: str,
        image: bytes | ObjectRef,
        options: BlurOptions,
        *,
        callback_url: str | None = None,
        videos: bool = False,
    ) -> JobRecord:
        """Check, store and queue one image; returns the queued record.

        ``image`` is either the image's bytes (stored as an upload, deleted by the worker when done) or a
        reference to an object in the store that Veil may read (left in place). ``videos``: a video is
        taken too (``POST /v1/jobs``), else refused 415.
        Raises 400/413/415 for bad images, 503 when Redis or the store is unavailable or the queue is full,
        429 when the owner's key is over its rate or a quota, 402 when it is out of credits (all before the
        image is checked or stored; the quotas again, atomically, when it is queued: :mod:`shared.quotas`).
        """
        await self.admit(owner)
        if isinstance(image, ObjectRef):
            return await self._submit_stored(owner, image, options, callback_url, videos)
        return await self._submit_upload(owner, image, options, callback_url, videos)

    async def admit(self, owner: str, *, count: bool = True, quota: bool = True) -> None:
        """Refuse one more job for ``owner`` while the queue is full (503), the key over its rate or a
        quota (429) or out of credits (402); ``count=False`` looks without using up the rate (see
        :meth:`Admission.admit`). Nothing is charged here (:meth:`_enqueue` does, atomically);
        ``quota=False`` leaves the key's credits and quotas out."""
        await self._admission.admit(owner, count=count)
        if quota:
            with redis_errors("checking the key's quotas"):
                await self._quotas.check(owner)

    async def get(self, job_id: str, owner: str) -> JobRecord:
        """The owner's job; :class:`NotFoundError` for unknown jobs and other owners' jobs alike."""
        record = None
        if _JOB_ID.fullmatch(job_id):
            with redis_errors("reading the job"):
                record = await self._jobs.get(job_id)
        if record is None or record.owner != owner:
            raise NotFoundError(f"no job {job_id!r}")
        return record

    async def wait(self, job_id: str, owner: str, timeout: float) -> JobRecord:  # noqa: ASYNC109
        """Wait until the job has finished or ``timeout`` seconds have passed; returns the latest record,
        finished or not (a timeout is an answer here, not an error). The record is re-read when the job is
        announced as finished (:class:`gateway.jobwatch.FinishedJobs`), else polled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        with self._finished.watch(job_id) as announced:
            while True:
                announced.clear()
                record = await self.get(job_id, owner)
                remaining = deadline - loop.time()
                if record.status.finished or remaining <= 0:
                    return record
                interval = self.fallback_interval if self._finished.listening else self.poll_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(announced.wait(), min(interval, remaining))

    # -- internals ----------------------------------------------------------------------------------------

    async def _submit_upload(
        self, owner: str, data: bytes, options: BlurOptions, callback_url: str | None, videos: bool = False
    ) -> JobRecord:
        limits = self._settings.limits
        if len(data) > limits.max_upload_bytes and not (videos and sniff_video(data)):
            raise PayloadTooLargeError(
                f"the image is {len(data)} bytes, over the limit of {limits.max_upload_bytes}"
            )
        info = await self.inspect(data, videos=videos)
        job_id = new_job_id()
        source = ObjectRef(bucket=self._store.bucket, key=self._store.upload_key(job_id))
        await self._transfer.put(source.key, data, info.format.content_type)
        try:
            return await self._enqueue(
                job_id, owner, source, info, options, delete_source=True, callback_url=callback_url
            )
        except BaseException:
            await self._discard_upload(source)
            raise

    async def _submit_stored(
        self, owner: str, ref: ObjectRef, options: BlurOptions, callback_url: str | None, videos: bool = False
    ) -> JobRecord:
        self._check_readable(ref)
        limits = self._settings.limits
        most = max(limits.max_upload_bytes, limits.max_video_bytes) if videos else limits.max_upload_bytes
        try:
            stored = await self._transfer.get(ref.key, ref.bucket, most)
        except NotFoundError as exc:
            raise ValidationError(f"no object {ref.key!r} in bucket {ref.bucket!r}") from exc
        if len(stored.body) > limits.max_upload_bytes and not sniff_video(stored.body):
            raise PayloadTooLargeError(
                f"the image is {len(stored.body)} bytes, over the limit of {limits.max_upload_bytes}"
            )
        info = await self.inspect(stored.body, videos=videos)
        return await self._enqueue(
            new_job_id(), owner, ref, info, options, delete_source=False, callback_url=callback_url
        )

    def _check_readable(self, ref: ObjectRef) -> None:
        s3 = self._settings.s3
        # Canonical keys only, whoever built the reference: what is checked is what the store will serve.
        check_key(ref.key, "s3.key")
        if ref.bucket == s3.bucket:
            # Other jobs' (and other keys') uploads and results live there: never an input, whatever the
            # key, and even if an operator listed it as readable.
            raise ValidationError(f"s3.bucket: Veil's own bucket {ref.bucket!r} cannot be used as input")
        if ref.bucket not in s3.readable_buckets:
            raise ValidationError(f"s3.bucket {ref.bucket!r} is not readable by Veil")

    async def _enqueue(
        self,
        job_id: str,
        owner: str,
        source: ObjectRef,
        info: InputInfo,
        options: BlurOptions,
        *,
        delete_source: bool,
        callback_url: str | None,
    ) -> JobRecord:
        record = JobRecord(id=job_id, owner=owner, status=JobStatus.QUEUED, input=info, options=options)
        request = JobRequest(
            id=job_id,
            owner=owner,
            source=source,
            delete_source=delete_source,
            input=info,
            options=options,
            created_at=record.created_at,
            callback_url=callback_url,
        )
        try:
            # Its key's credits and quotas: checked and charged in one step (402/429), given back below
            # if the job is not queued after all.
            with redis_errors("checking the key's quotas"):
                await self._quotas.reserve(owner, job_id)
            # The record first (a worker that starts the job at once finds it), then arq's own enqueue;
            # if either fails the record goes again, and the caller deletes the upload.
            with redis_errors("queueing the job"):
                await self._jobs.put(record)
                queued = await enqueue_anonymize(self._redis, request, self._settings.redis.queue_name)
            if not queued:  # a fresh uuid4 arq already holds: never seen, but never a silent no-op
                raise RuntimeError(f"arq already holds a job with the id {job_id}")
        except VeilError:
            await self._forget(owner, job_id)
            raise
        except Exception as exc:
            await self._forget(owner, job_id)
            log.exception("job %s could not be queued", job_id)
            raise QueueUnavailableError("the job could not be queued") from exc
        except BaseException:
            await self._forget(owner, job_id)
            raise
        log.info(
            "job %s queued: owner=%s %s %dx%d source=%s/%s",
            job_id,
            owner,
            info.format.value,
            info.width,
            info.height,
            source.bucket,
            source.key,
        )
        return record

    async def _forget(self, owner: str, job_id: str) -> None:
        """Undo a job that was not queued: its record, and its reservation (credit, counts, slot)."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._jobs.delete(job_id))
        try:
            await asyncio.shield(self._quotas.release(owner, job_id))
        except Exception:
            log.warning("could not give back the reservation of job %s", job_id, exc_info=True)

    async def _discard_upload(self, source: ObjectRef) -> None:
        try:
            await asyncio.shield(self._transfer.delete(source.key, source.bucket))
        except Exception:
            log.warning(
                "could not delete the orphaned upload %s/%s", source.bucket, source.key, exc_info=True
            )
