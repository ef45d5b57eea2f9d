"""Plate Recognizer Blur facade on the live stack: upload with intensities, and upload_url (served from
loopback, allow-listed by the live stack) without intensities ("blur": null)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import PLATE_BOX, PLATE_JPEG

pytestmark = [pytest.mark.integration, pytest.mark.models]


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    app = web.Application()

    async def demo(request: web.Request) -> web.Response:
        return web.Response(body=PLATE_JPEG, content_type="image/jpeg")

    app.router.add_get("/static/demo.jpg", demo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/static/demo.jpg"))
    await server.close()


async def test_upload_with_intensities(live_stack: LiveStack) -> None:
    body = aiohttp.FormData()
    body.add_field("upload", PLATE_JPEG, filename="car.jpg", content_type="image/jpeg")
    body.add_field("plates", "10")
    body.add_field("faces", "10")
    headers = {"Authorization": f"Token {live_stack.api_key}"}
    async with (
        aiohttp.ClientSession(live_stack.url) as http,
        http.post("/v1/blur", data=body, headers=headers) as r,
    ):
        assert r.status == 200
        result = await r.json()
    assert set(result) == {"faces", "plates", "blur"}
    assert result["faces"] == []
    plate = result["plates"][0]
    assert set(plate) == {"polygon", "result"}
    polygon = plate["polygon"]
    assert len(polygon) == 4 and all(isinstance(v, float) for point in polygon for v in point)
    tx1, ty1, _, _ = PLATE_BOX
    assert abs(polygon[0][0] - tx1) < 15 and abs(polygon[0][1] - ty1) < 15  # top-left first
    assert result["blur"]["content_type"] == "image/jpeg" and result["blur"]["filename"] == "car.jpg"
    assert base64.b64decode(result["blur"]["base64"]).startswith(b"\xff\xd8\xff")


async def test_upload_url_without_intensities(live_stack: LiveStack, image_server: str) -> None:
    headers = {"Authorization": f"Token {live_stack.api_key}"}
    async with (
        aiohttp.ClientSession(live_stack.url) as http,
        http.post("/v1/blur", data={"upload_url": image_server}, headers=headers) as r,
    ):
        assert r.status == 200
        result = await r.json()
    assert result["blur"] is None  # detect only
    assert len(result["plates"]) >= 1


async def test_logo_lands_on_the_plate_and_exclusions_hide_detections(live_stack: LiveStack) -> None:
    red = np.zeros((40, 120, 3), np.uint8)
    red[:, :, 2] = 255
    ok, logo = cv2.imencode(".png", red)
    assert ok
    body = aiohttp.FormData()
    body.add_field("upload", PLATE_JPEG, filename="car.jpg", content_type="image/jpeg")
    body.add_field("logo", logo.tobytes(), filename="logo.png", content_type="image/png")
    body.add_field("plates", "5")
    headers = {"Authorization": f"Token {live_stack.api_key}"}
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post("/v1/blur", data=body, headers=headers) as r:
            result = await r.json()
            assert r.status == 200, result
        blurred = cv2.imdecode(np.frombuffer(base64.b64decode(result["blur"]["base64"]), np.uint8), 1)
        assert blurred is not None
        x1, y1, x2, y2 = PLATE_BOX
        b, g, red_channel = blurred[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
        assert red_channel > 180
        assert b < 90
        assert g < 90
        # The bottom 60 % of the image excluded: the plate (low in the frame) is neither blurred nor reported.
        form = aiohttp.FormData()
        form.add_field("upload", PLATE_JPEG, filename="car.jpg", content_type="image/jpeg")
        form.add_field("plates", "10")
        form.add_field("eb", "60")
        async with http.post("/v1/blur", data=form, headers=headers) as r:
            excluded = await r.json()
            assert r.status == 200, excluded
    assert excluded["plates"] == []


async def _blur(http: aiohttp.ClientSession, api_key: str, *skip: str) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("upload", PLATE_JPEG, filename="car.jpg", content_type="image/jpeg")
    form.add_field("plates", "10")
    for pattern in skip:  # repeatable, as the vendor documents it
        form.add_field("skip_regexp", pattern)
    async with http.post("/v1/blur", data=form, headers={"Authorization": f"Token {api_key}"}) as r:
        result: dict[str, Any] = await r.json()
        assert r.status == 200, result
    return result


def _plate_change(result: dict[str, Any]) -> float:
    """Mean absolute difference between the returned image and the input over the plate."""
    blurred = cv2.imdecode(np.frombuffer(base64.b64decode(result["blur"]["base64"]), np.uint8), 1)
    original = cv2.imdecode(np.frombuffer(PLATE_JPEG, np.uint8), 1)
    assert blurred is not None and original is not None
    x1, y1, x2, y2 = PLATE_BOX
    diff = np.abs(blurred[y1:y2, x1:x2].astype(int) - original[y1:y2, x1:x2].astype(int))
    return float(diff.mean())


async def test_skip_regexp_leaves_the_matching_plate_alone_and_result_reads_it(live_stack: LiveStack) -> None:
    """The scene's plate reads BRA2E19 (tests/images.py renders it): a pattern that fully matches the read
    plate leaves it unblurred; others (or a prefix) do not."""
    async with aiohttp.ClientSession(live_stack.url) as http:
        skipped = await _blur(http, live_stack.api_key, "zz\\d+", "BRA\\d[a-z]\\d+")
        blurred = await _blur(http, live_stack.api_key, "bra")  # a prefix: not a full match
    (plate,) = skipped["plates"]
    result = plate["result"]
    assert result["plate"] == "bra2e19"
    assert 0.5 < result["score"] <= 1.0
    assert result["candidates"] == [{"plate": "bra2e19", "score": result["score"]}]
    assert set(result) >= {"box", "dscore"}
    assert _plate_change(skipped) < 4  # only JPEG's re-encoding
    assert blurred["plates"][0]["result"]["plate"] == "bra2e19"
    assert _plate_change(blurred) > 10
