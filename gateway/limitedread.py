"""Reading a streamed body whole, refusing (413) anything over a byte limit while it streams: the one
size-limited reader behind request bodies, multipart parts and fetched URLs."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from aiohttp import BodyPartReader

from shared.errors import PayloadTooLargeError

CHUNK_BYTES = 64 * 1024


async def read_limited(chunks: AsyncIterable[bytes], limit: int, what: str) -> bytes:
    """Every chunk joined; :class:`PayloadTooLargeError` ("<what> is over the limit…") as soon as the
    total passes ``limit``, so no more than ``limit`` + one chunk is ever held."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """A multipart part's body as chunks (aiohttp's part reader has no chunk iterator of its own)."""
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk
