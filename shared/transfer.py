"""Image bytes to and from the store on the event loop: :class:`~shared.storage.ObjectStore`'s boto3 calls
in threads of their own, each call within a deadline.

The same client as every other store call (one I/O path: retries, errors, ``AWS_CA_BUNDLE`` and proxies
are boto3's). Presigned URLs carried by aiohttp cost ~7 ms less client CPU per job, under the 5 % of a
photo's CPU that would justify a second path (docs/decisions.md, "S3").

Every call, retries included, ends within ``VEIL_S3__REQUEST_TIMEOUT_SECONDS``: a store that accepts
connections but stops answering (paused, overloaded, a half-open link) raises
:class:`StoreUnavailableError` then, instead of holding the caller for as long as the outage lasts.
boto3 bounds each attempt's connect and each read by its share of that (shared.storage); sending a body
has no timeout of its own, hence the deadline over the whole call. A call abandoned at its deadline ends
in its thread by itself, bounded by those per-attempt timeouts; the threads are this class's own, so a
stalled store never holds up the event loop's default executor (image checks, other ``to_thread`` work).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from shared.errors import NotFoundError, StoreUnavailableError
from shared.storage import MAX_CONNECTIONS, ObjectStore, StoredObject

T = TypeVar("T")
log = logging.getLogger(__name__)

# Files (videos) move at no less than this, on top of the per-call timeout: their deadline grows with them.
MIN_FILE_BYTES_PER_SECOND = 4 * 1024 * 1024


class ObjectTransfer:
    """Async put / get / delete of whole objects. Raises what :class:`ObjectStore` raises:
    :class:`NotFoundError` for a missing object, :class:`PayloadTooLargeError` for one over ``max_bytes``,
    :class:`StoreUnavailableError` otherwise."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.timeout = store.settings.request_timeout_seconds  # per call, retries included
        # As many threads as the client has connections: a call never waits for a thread, only for the store.
        self._threads = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="s3")

    @classmethod
    def open(cls, store: ObjectStore) -> ObjectTransfer:
        """:meth:`close` it when done."""
        return cls(store)

    async def close(self) -> None:
        # Calls still in their threads (abandoned at their deadline) end by themselves; don't wait for them.
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None) -> None:
        await self._run("the upload", functools.partial(self.store.put, key, body, content_type, bucket))

    async def get(self, key: str, bucket: str | None = None, max_bytes: int | None = None) -> StoredObject:
        return await self._run("a download", functools.partial(self.store.get, key, bucket, max_bytes))

    async def download(
        self, key: str, path: Path, bucket: str | None = None, max_bytes: int | None = None
    ) -> int:
        """Stream an object into a file (:meth:`ObjectStore.download_file`); returns its size. The
        deadline allows ``max_bytes`` at :data:`MIN_FILE_BYTES_PER_SECOND` on top of the per-call one."""
        call = functools.partial(self.store.download_file, key, path, bucket, max_bytes)
        return await self._run("a download", call, (max_bytes or 0) / MIN_FILE_BYTES_PER_SECOND)

    async def upload(self, key: str, path: Path, content_type: str, bucket: str | None = None) -> None:
        """Store a file (:meth:`ObjectStore.upload_file`), its deadline grown with its size."""
        extra = (await asyncio.to_thread(path.stat)).st_size / MIN_FILE_BYTES_PER_SECOND
        call = functools.partial(self.store.upload_file, key, path, content_type, bucket)
        await self._run("the upload", call, extra)

    async def delete(self, key: str, bucket: str | None = None) -> None:
        # S3 answers 204 for a missing key, some stores 404: either way it is gone.
        with contextlib.suppress(NotFoundError):
            await self._run("a delete", functools.partial(self.store.delete, key, bucket))

    async def _run(self, what: str, call: Callable[[], T], extra_seconds: float = 0.0) -> T:
        # The caller's context (its request id for the log lines) goes along, as with asyncio.to_thread.
        context = contextvars.copy_context()
        async with self._deadline(what, self.timeout + extra_seconds):
            return await asyncio.get_running_loop().run_in_executor(
                self._threads, functools.partial(context.run, call)
            )

    @contextlib.asynccontextmanager
    async def _deadline(self, what: str, seconds: float) -> AsyncIterator[None]:
        """The whole call, retries and backoff included, within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError as exc:
            log.warning("object store did not answer %s within %g s", what, seconds)
            raise StoreUnavailableError(
                f"object store did not answer within {seconds:g} s; try again later"
            ) from exc
