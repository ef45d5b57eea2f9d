"""Image bytes to and from the store on the event loop: presigned URLs (signed by the boto3 client,
offline) carried by aiohttp.

A boto3 call costs about 5 ms of CPU per 270 KB image on the client (its request pipeline, urllib3,
a SHA-256 of the body over HTTP, a thread hop), the same URL over aiohttp about 2.4 ms: 8-9 ms per job
over the three hot calls (the gateway's upload PUT, the worker's GET and result PUT). Everything else
(listing, HEAD, lifecycle, bucket creation) stays on :class:`~shared.storage.ObjectStore`.
``VEIL_S3__PRESIGNED_TRANSFERS=false`` sends these calls through boto3 too (e.g. for a store behind a
proxy or CA that only boto3 is configured for; ``AWS_CA_BUNDLE`` is honoured here as well).

Every call, retries included and either way, ends within ``VEIL_S3__REQUEST_TIMEOUT_SECONDS``: a store
that accepts connections but stops answering (paused, overloaded, a half-open link) raises
:class:`StoreUnavailableError` then, instead of holding the caller for as long as the outage lasts. Each
attempt waits at most its share of that to connect and for each read, so a stalled attempt leaves time
to retry; sending a body has no timeout of its own, hence the deadline over the whole call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator

import aiohttp

from shared.errors import NotFoundError, StoreUnavailableError
from shared.storage import ATTEMPTS, ObjectStore, StoredObject, attempt_timeout

log = logging.getLogger(__name__)

URL_LIFETIME_SECONDS = 300  # used at once; only has to outlive the request and its retries
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def proxy_for(endpoint_url: str | None) -> str | None:
    """The proxy the environment names for ``endpoint_url`` (None: direct, or no endpoint set, which
    means AWS over HTTPS)."""
    url = urllib.parse.urlsplit(endpoint_url or "https://s3.amazonaws.com")
    if url.hostname and urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies_environment().get(url.scheme)


class ObjectTransfer:
    """Async put / get / delete of whole objects. Raises what :class:`ObjectStore` raises:
    :class:`NotFoundError` for a missing object, :class:`StoreUnavailableError` otherwise."""

    def __init__(self, store: ObjectStore, session: aiohttp.ClientSession | None) -> None:
        self.store = store
        self._session = session  # None: through boto3 in a thread
        self.timeout = store.settings.request_timeout_seconds  # per call, retries included

    @classmethod
    def open(cls, store: ObjectStore) -> ObjectTransfer:
        """Inside a running event loop; :meth:`close` it when done."""
        if not store.settings.presigned_transfers:
            return cls(store, None)
        cafile = os.environ.get("AWS_CA_BUNDLE")
        connector = aiohttp.TCPConnector(
            limit=64, ssl=ssl.create_default_context(cafile=cafile) if cafile else True
        )
        per_attempt = attempt_timeout(store.settings)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=per_attempt, sock_read=per_attempt)
        # Every URL goes to the one internal endpoint, so its proxy (HTTP(S)_PROXY / NO_PROXY, as boto3
        # reads them) is looked up once here. aiohttp's trust_env would redo it and read ~/.netrc in a
        # thread on every request: 0.9 ms of CPU each, three requests per job.
        proxy = proxy_for(store.settings.endpoint_url)
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, proxy=proxy)
        return cls(store, session)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def put(self, key: str, body: bytes, content_type: str, bucket: str | None = None) -> None:
        async with self._deadline("the upload"):
            if self._session is None:
                await asyncio.to_thread(self.store.put, key, body, content_type, bucket)
                return
            url = self.store.presign(
                "put_object", key, bucket, content_type=content_type, expires_in=URL_LIFETIME_SECONDS
            )
            await self._request("PUT", url, "object store refused the upload", body, content_type)

    async def get(self, key: str, bucket: str | None = None, max_bytes: int | None = None) -> StoredObject:
        async with self._deadline("a download"):
            if self._session is None:
                return await asyncio.to_thread(self.store.get, key, bucket, max_bytes)
            url = self.store.presign("get_object", key, bucket, expires_in=URL_LIFETIME_SECONDS)
            body, content_type = await self._request("GET", url, "object store error", max_bytes=max_bytes)
            return StoredObject(body, content_type)

    async def delete(self, key: str, bucket: str | None = None) -> None:
        async with self._deadline("a delete"):
            if self._session is None:
                await asyncio.to_thread(self.store.delete, key, bucket)
                return
            url = self.store.presign("delete_object", key, bucket, expires_in=URL_LIFETIME_SECONDS)
            # S3 answers 204 for a missing key, some stores 404: either way it is gone.
            with contextlib.suppress(NotFoundError):
                await self._request("DELETE", url, "object store refused the delete")

    @contextlib.asynccontextmanager
    async def _deadline(self, what: str) -> AsyncIterator[None]:
        """The whole call, retries and backoff included, within ``self.timeout``. A boto3 call abandoned
        here ends in its thread by itself, bounded by its own timeouts (shared.storage)."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            log.warning("object store did not answer %s within %g s", what, self.timeout)
            raise StoreUnavailableError(
                f"object store did not answer within {self.timeout:g} s; try again later"
            ) from exc

    async def _request(
        self,
        method: str,
        url: str,
        what: str,
        body: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> tuple[bytes, str | None]:
        assert self._session is not None
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._session.request(method, url, data=body, headers=headers) as response:
                    if response.status == 404:
                        raise NotFoundError("object not found in the store")
                    if response.status in _RETRY_STATUSES and attempt < ATTEMPTS:
                        await asyncio.sleep(0.1 * 4 ** (attempt - 1))
                        continue
                    if response.status >= 300:
                        text = (await response.read())[:300].decode("utf-8", "replace")
                        log.warning("%s: %s %s", what, response.status, text)
                        raise StoreUnavailableError(f"{what}; try again later")
                    length = response.content_length
                    if max_bytes is not None and length is not None and length > max_bytes:
                        raise ValueError(f"object is {length} bytes, over the limit of {max_bytes}")
                    data = await response.read()
                    return data, response.headers.get("Content-Type")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == ATTEMPTS:
                    log.warning("object store unreachable: %s", exc)
                    raise StoreUnavailableError("object store unreachable; try again later") from exc
                await asyncio.sleep(0.1 * 4 ** (attempt - 1))
        raise AssertionError("unreachable")
