"""Fetching ``image_url`` inputs without becoming an SSRF proxy.

The address checks live in :mod:`shared.urlguard` (the worker's webhook deliveries use them too). Here:

* Redirects are followed by hand, each hop checked again, at most ``url_max_redirects``.
* The whole fetch is bounded in time and the body in bytes while it streams.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway.limitedread import CHUNK_BYTES, read_limited
from shared.errors import PayloadTooLargeError, UpstreamFetchError
from shared.settings import Settings
from shared.urlguard import UrlAllowlist, UrlNotAllowedError, check_url


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    url: str  # after redirects
    content_type: str | None


class UrlFetcher:
    """Fetches a URL's body under the SSRF guard and the size/time/redirect limits.

    ``session`` must come from :func:`create_guarded_session` with the same allowlist (the caller owns
    and closes it).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        allowlist: UrlAllowlist,
        *,
        max_bytes: int,
        timeout: float,
        max_redirects: int,
    ) -> None:
        self._session = session
        self._allowlist = allowlist
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> UrlFetcher:
        return cls(
            session,
            UrlAllowlist(settings.effective_url_allowlist()),
            max_bytes=settings.limits.max_upload_bytes,
            timeout=settings.limits.url_fetch_timeout_seconds,
            max_redirects=settings.limits.url_max_redirects,
        )

    async def fetch(self, url: str) -> FetchedImage:
        """The body at ``url``. Raises 400 ``URL_NOT_ALLOWED`` / ``FETCH_FAILED`` or 413."""
        try:
            parsed = URL(url.strip())
        except (ValueError, TypeError) as exc:
            raise UpstreamFetchError(f"image_url is not a valid URL: {exc}") from exc
        check_url(parsed, self._allowlist)  # scheme first: file:, ftp: etc. are refused, not "failed"
        try:
            async with asyncio.timeout(self.timeout):
                return await self._follow(parsed)
        except TimeoutError as exc:
            raise UpstreamFetchError(f"fetching {parsed.host} timed out after {self.timeout:g} s") from exc

    async def _follow(self, url: URL) -> FetchedImage:
        for _hop in range(self.max_redirects + 1):
            check_url(url, self._allowlist)
            try:
                async with self._session.get(url, allow_redirects=False) as response:
                    if response.status in {301, 302, 303, 307, 308}:
                        location = response.headers.get("Location")
                        if not location:
                            raise UpstreamFetchError(
                                f"{url.host} answered {response.status} without a Location"
                            )
                        url = response.url.join(URL(location))
                        continue
                    if not 200 <= response.status < 300:
                        raise UpstreamFetchError(
                            f"{url.host} answered {response.status} {response.reason or ''}".rstrip()
                        )
                    data = await self._read_body(response)
                    return FetchedImage(data, str(response.url), response.content_type or None)
            except UrlNotAllowedError:
                raise
            except aiohttp.ClientConnectorDNSError as exc:
                raise UpstreamFetchError(f"could not resolve {url.host}: {exc.os_error}") from exc
            except aiohttp.ClientConnectorError as exc:
                raise UpstreamFetchError(f"could not connect to {url.host}: {exc.os_error}") from exc
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise UpstreamFetchError(
                    f"fetching from {url.host} failed: {exc or type(exc).__name__}"
                ) from exc
        raise UpstreamFetchError(f"more than {self.max_redirects} redirects")

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.max_bytes
        if response.content_length is not None and response.content_length > limit:
            raise PayloadTooLargeError(
                f"the image at the URL is {response.content_length} bytes, over {limit}"
            )
        return await read_limited(response.content.iter_chunked(CHUNK_BYTES), limit, "the image at the URL")
