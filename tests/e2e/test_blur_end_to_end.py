"""The whole path as a user takes it: upload → S3 → queue → real detectors → blur → S3 → poll → download."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from shared.storage import ObjectStore
from tests.e2e.conftest import LiveStack
from tests.images import astronaut_bgr, make_plate_scene

pytestmark = [pytest.mark.integration, pytest.mark.models]

ASTRONAUT_FACE = (180, 58, 270, 178)  # x1, y1, x2, y2: where the face is in skimage's astronaut


def _encode(image_bgr: npt.NDArray[np.uint8], ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image_bgr)
    assert ok
    return buf.tobytes()


def _decode(body: bytes) -> npt.NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.uint8)


async def submit_and_wait(
    stack: LiveStack, body: bytes, filename: str, within: float = 60, **options: str
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("image", body, filename=filename)
    for name, value in options.items():
        form.add_field(name, value)
    headers = {"X-API-Key": stack.api_key}
    async with aiohttp.ClientSession(stack.url) as http:
        async with http.post("/v1/jobs", data=form, headers=headers) as response:
            created = await response.json()
            assert response.status == 202, created
            assert response.headers["Location"] == f"/v1/jobs/{created['id']}"
            assert created["status"] == "queued"
        deadline = asyncio.get_running_loop().time() + within
        while True:
            async with http.get(f"/v1/jobs/{created['id']}", headers=headers) as response:
                job: dict[str, Any] = await response.json()
            if job["status"] in ("succeeded", "failed"):
                return job
            assert asyncio.get_running_loop().time() < deadline, job
            await asyncio.sleep(0.1)


async def download(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


def _changed_mask(
    before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8], tol: int
) -> npt.NDArray[np.bool_]:
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=2)
    return np.asarray(diff > tol)


def _inside(regions: list[list[int]], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape[:2], dtype=bool)
    for x1, y1, x2, y2 in regions:
        mask[y1:y2, x1:x2] = True
    return mask


async def test_astronaut_png_face_blurred_and_nothing_else_touched(
    live_stack: LiveStack, store: ObjectStore
) -> None:
    original = astronaut_bgr()
    job = await submit_and_wait(live_stack, _encode(original, ".png"), "astronaut.png")

    assert job["status"] == "succeeded", job
    assert job["input"] == {"width": 512, "height": 512, "format": "png"}
    faces = [d for d in job["detections"] if d["class"] == "face"]
    assert faces, job["detections"]
    x1, y1, x2, y2 = faces[0]["box"]
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    assert x1 < fx2 and fx1 < x2 and y1 < fy2 and fy1 < y2  # the detection is on the face
    assert job["result"]["content_type"] == "image/png"
    assert job["blurred_regions"]

    result = _decode(await download(job["result"]["url"]))
    assert result.shape == original.shape
    inside = _inside(job["blurred_regions"], original.shape)
    changed = _changed_mask(original, result, tol=0)
    # PNG is lossless: exactly the reported regions changed, nothing outside them.
    assert not changed[~inside].any()
    face = (slice(fy1 + 20, fy2 - 20), slice(fx1 + 20, fx2 - 20))
    assert changed[face].mean() > 0.8

    # The original upload is gone once the job ended.
    assert not store.exists(store.upload_key(job["id"]))


async def test_jpeg_keeps_format_and_far_pixels(live_stack: LiveStack) -> None:
    original = astronaut_bgr()
    job = await submit_and_wait(live_stack, _encode(original, ".jpg"), "astronaut.jpg")
    assert job["status"] == "succeeded", job
    assert job["input"]["format"] == "jpeg"
    assert job["result"]["content_type"] == "image/jpeg"
    result = _decode(await download(job["result"]["url"]))
    source = _decode(_encode(original, ".jpg"))
    far = (slice(350, 512), slice(0, 140))  # bottom-left: the suit and background, far from the face
    assert np.abs(result[far].astype(int) - source[far].astype(int)).mean() < 3
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    face = (slice(fy1 + 20, fy2 - 20), slice(fx1 + 20, fx2 - 20))
    assert np.abs(result[face].astype(int) - source[face].astype(int)).mean() > 8


async def test_plate_blurred(live_stack: LiveStack) -> None:
    scene, (px1, py1, px2, py2) = make_plate_scene()
    job = await submit_and_wait(live_stack, _encode(scene, ".png"), "car.png", targets="plates")
    assert job["status"] == "succeeded", job
    plates = [d for d in job["detections"] if d["class"] == "plate"]
    assert plates, job
    assert all(d["class"] == "plate" for d in job["detections"])  # faces were not asked for
    result = _decode(await download(job["result"]["url"]))
    inside = _inside(job["blurred_regions"], scene.shape)
    # The whole plate lies inside the blurred regions, and its pixels changed.
    assert inside[py1:py2, px1:px2].mean() > 0.98
    changed = _changed_mask(scene, result, tol=0)
    assert changed[py1:py2, px1:px2].mean() > 0.6
    assert not changed[~inside].any()
