"""A small client of Veil's native HTTP API, as ``veil eval``, ``veil bench`` and ``load/`` use it: submit a
photo, poll its job, fetch its result, with one API key.

Each call answers the HTTP status and the body, so a caller decides what counts as a failure (the load
generator counts statuses, eval stops at the first odd one, bench records it). The caller owns the
``aiohttp.ClientSession`` (its connection limit and timeouts are the caller's choice).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

FINISHED = ("succeeded", "failed")
BACKOFF_FACTOR = 1.5


class ApiError(Exception):
    """The API answered a poll with something other than the job."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def multipart_body(filename: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with the image as ``image`` and ``fields`` after it, and its content
    type: what a client's form upload sends, built once per image."""
    boundary = uuid.uuid4().hex
    while boundary.encode() in data:  # practically never; a boundary must not occur in the parts
        boundary = uuid.uuid4().hex
    quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")  # as browsers do
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data,
        b"\r\n",
    ]
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class VeilClient:
    """``url`` is the gateway's base URL (a path prefix is kept); every job call carries ``api_key``."""

    def __init__(self, http: aiohttp.ClientSession, url: str, api_key: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.headers = {"X-API-Key": api_key}

    async def submit(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        """``POST /v1/jobs`` with a prebuilt form (:func:`multipart_body`): the status and the answer."""
        headers = {**self.headers, "Content-Type": content_type}
        async with self.http.post(f"{self.url}/v1/jobs", data=body, headers=headers) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            return response.status, answer

    async def submit_photo(
        self, filename: str, data: bytes, fields: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """Upload one photo with the job's options (``targets``, ``min_score``, ``wait`` …) as form fields."""
        return await self.submit(*multipart_body(filename, data, fields))

    async def job(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """``GET /v1/jobs/{id}``: the status and the job record (or the error)."""
        async with self.http.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers) as response:
            record: dict[str, Any] = await response.json(content_type=None)
            return response.status, record

    async def result(self, job_id: str) -> tuple[int, bytes]:
        """``GET /v1/jobs/{id}/result``, following the redirect to the stored image: status and bytes."""
        async with self.http.get(f"{self.url}/v1/jobs/{job_id}/result", headers=self.headers) as response:
            return response.status, await response.read()

    async def health(self) -> int:
        """``GET /healthz`` (no key needed): the status."""
        async with self.http.get(f"{self.url}/healthz") as response:
            await response.read()
            return response.status

    async def until_finished(
        self, job: dict[str, Any], poll_s: float, deadline: float, *, max_poll_s: float | None = None
    ) -> dict[str, Any] | None:
        """Poll ``job`` (as ``submit`` answered it) until it has succeeded or failed: the finished record,
        or None once ``time.monotonic()`` has passed ``deadline``. Polls every ``poll_s``; with
        ``max_poll_s``, the wait grows by half each time up to it (a quick job is seen soon, a long queue is
        polled lightly). A poll answered with anything but the job raises :class:`ApiError`."""
        wait = poll_s
        while job.get("status") not in FINISHED:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            status, job = await self.job(job["id"])
            if status != 200:
                raise ApiError(status, job)
            if job.get("status") not in FINISHED and time.monotonic() > deadline:
                return None
            if max_poll_s is not None:
                wait = min(wait * BACKOFF_FACTOR, max_poll_s)
        return job
