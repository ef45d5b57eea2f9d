"""The malformed-image corpus's accepted cases (tests/malformed.py) through every input path of the live
stack, worker included: each job ends the way its case says (blurred, in the right format and depth, colours
kept, nothing but pixels carried over; or failed with a code and no result), never a 5xx; and afterwards
the same worker process is still there and blurs a good image. What the gateway refuses is
tests/integration/test_malformed_images.py."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

import aiohttp
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from redis.asyncio import Redis

from shared.imageformat import sniff_format
from shared.readiness import ready_workers
from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import ASTRONAUT_JPEG
from tests.images import astronaut_rgb
from tests.malformed import (
    FACE,
    NATIVE_PATHS,
    PATHS,
    PLATEBLURER,
    ZIP_MARKER,
    Blurred,
    Case,
    Failed,
    accepted,
    error_of,
    post,
    rendered,
)

pytestmark = [pytest.mark.integration, pytest.mark.models]

POLL_SECONDS = 0.2
JOB_DEADLINE_SECONDS = 180.0  # a bound for a hung job, not a timing assertion
# Where the astronaut has no face: re-encoding may move pixels a little, a blur or wrong colours a lot.
CONTROL = (380, 380, 500, 500)


@dataclass(frozen=True)
class Finished:
    """How a submission ended: the HTTP status that said so, the failure's code or the result's bytes."""

    status: int
    code: str | None = None
    image: bytes | None = None


async def _worker_ids(stack: LiveStack) -> set[tuple[str, str]]:
    redis = Redis.from_url(stack.settings.redis.url)
    try:
        return {(w.id, w.started_at) for w in await ready_workers(redis, stack.settings.redis.prefix)}
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
async def workers_before(live_stack: LiveStack) -> set[tuple[str, str]]:
    """The ready workers (id, start time) before the corpus; the last test finds the same ones."""
    found = await _worker_ids(live_stack)
    assert found
    return found


async def _job_outcome(
    http: aiohttp.ClientSession, headers: dict[str, str], job: dict[str, object]
) -> Finished:
    """Poll a native job until it has finished; its image inline (``output=base64``) when it succeeded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOB_DEADLINE_SECONDS
    while job["status"] not in ("succeeded", "failed"):
        assert loop.time() < deadline, job
        await asyncio.sleep(POLL_SECONDS)
        async with http.get(f"/v1/jobs/{job['id']}?output=base64", headers=headers) as r:
            assert r.status == 200
            job = await r.json()
    if job["status"] == "failed":
        error = job["error"]
        assert isinstance(error, dict) and job["result"] is None, job
        async with http.get(f"/v1/jobs/{job['id']}/result", headers=headers) as r:
            assert (r.status, (await r.json())["code"]) == (409, "JOB_FAILED")
        return Finished(200, code=error["code"])
    result = job["result"]
    assert isinstance(result, dict), job
    if "base64" not in result:  # answered by a wait that ended before the job: read it again inline
        async with http.get(f"/v1/jobs/{job['id']}?output=base64", headers=headers) as r:
            result = (await r.json())["result"]
    return Finished(200, image=base64.b64decode(result["base64"]))


async def submit(http: aiohttp.ClientSession, stack: LiveStack, path: str, case: Case) -> Finished:
    request = post(path, case, stack.api_key)
    async with http.post(request.url, headers=request.headers, data=request.data, json=request.json) as r:
        status, raw = r.status, await r.read()
        is_json = r.content_type == "application/json"
        body = await r.json() if is_json else None
    assert status < 500, raw[:500]
    if path in NATIVE_PATHS and status in (200, 202):
        assert isinstance(body, dict)
        return await _job_outcome(http, {"X-API-Key": stack.api_key}, body)
    if status != 200:
        return Finished(status, code=error_of(path, body)[0])
    if not is_json:  # VehiCore's response=image
        return Finished(status, image=raw)
    assert isinstance(body, dict)
    encoded = body["final_photo"] if path == PLATEBLURER else body["blur"]["base64"]
    return Finished(status, image=base64.b64decode(encoded))


def _rgb8(image: bytes) -> tuple[npt.NDArray[np.uint8], int]:
    """The result's pixels as 8-bit RGB, and the bits per channel it was stored with."""
    stored = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored is not None and stored.ndim == 3 and stored.shape[2] == 3
    depth = 16 if stored.dtype == np.uint16 else 8
    pixels = np.asarray(stored // 257 if depth == 16 else stored, dtype=np.uint8)
    return np.ascontiguousarray(pixels[:, :, ::-1]), depth


def _mean_change(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    return float(np.abs(a[y1:y2, x1:x2].astype(np.int16) - b[y1:y2, x1:x2].astype(np.int16)).mean())


def check_blurred(path: str, outcome: Blurred, image: bytes) -> None:
    fmt = sniff_format(image)
    assert fmt is not None and fmt.content_type == outcome.content_type
    # Re-encoded from pixels: nothing the input carried besides them (a ZIP tail, chunks) rides along.
    assert ZIP_MARKER not in image and b"PK\x03\x04" not in image
    if fmt.content_type == "image/png":
        assert image.endswith(b"IEND\xae\x42\x60\x82")
    pixels, depth = _rgb8(image)
    assert (pixels.shape[1], pixels.shape[0]) == outcome.size
    if path == PLATEBLURER:  # plates only, and final_photo is redrawn (8-bit) with the plate boxes
        return
    assert depth == outcome.depth
    original = astronaut_rgb()
    # Upright, colours kept (a CMYK input converted, not inverted), the rest of the photo untouched...
    assert _mean_change(pixels, original, CONTROL) < 6
    # ...and the face blurred.
    if outcome.face:
        assert _mean_change(pixels, original, FACE) > 8


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", accepted(), ids=lambda case: case.name)
async def test_accepted_images_end_blurred_or_failed_with_a_code(
    live_stack: LiveStack, workers_before: set[tuple[str, str]], case: Case, path: str
) -> None:
    async with aiohttp.ClientSession(live_stack.url) as http:
        finished = await submit(http, live_stack, path, case)
    outcome = case.outcome
    if isinstance(outcome, Failed):
        # Native paths: the job failed with the code (and has no result). Facades wait for the job and
        # answer its failure as they answer a bad image.
        want = (200, outcome.code) if path in NATIVE_PATHS else rendered(path, 400, outcome.code)
        assert (finished.status, finished.code, finished.image) == (*want, None)
        return
    assert isinstance(outcome, Blurred)
    assert finished.image is not None, finished
    check_blurred(path, outcome, finished.image)


async def test_the_same_worker_still_blurs_after_the_corpus(
    live_stack: LiveStack, workers_before: set[tuple[str, str]]
) -> None:
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.get("/readyz") as r:
            assert r.status == 200, await r.text()
        good = Case("good", ASTRONAUT_JPEG, Blurred("image/jpeg"))
        assert isinstance(good.outcome, Blurred)
        for path in PATHS:
            finished = await submit(http, live_stack, path, good)
            assert finished.status == 200 and finished.image is not None, (path, finished)
            check_blurred(path, good.outcome, finished.image)
    # No worker died and came back: the ones that were ready before the corpus served it all.
    assert await _worker_ids(live_stack) == workers_before
