"""VehiCore facade on the live stack: the three endpoints and the three response modes."""

from __future__ import annotations

import io

import aiohttp
import pytest
from PIL import Image

from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import ASTRONAUT_JPEG, PLATE_BOX, PLATE_JPEG

pytestmark = [pytest.mark.integration, pytest.mark.models]


def form(data: bytes) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("image", data, filename="image.jpg", content_type="image/jpeg")
    return body


async def test_plates_mixed_and_faces_image(live_stack: LiveStack) -> None:
    headers = {"X-API-Key": live_stack.api_key}
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post(
            "/api/anonymize?padding=0.2&blur=40", data=form(PLATE_JPEG), headers=headers
        ) as response:
            assert response.status == 200
            assert response.content_type == "multipart/mixed"
            reader = aiohttp.MultipartReader.from_response(response)
            meta_part = await reader.next()
            assert isinstance(meta_part, aiohttp.BodyPartReader)
            meta = await meta_part.json()
            image_part = await reader.next()
            assert isinstance(image_part, aiohttp.BodyPartReader)
            assert image_part.headers["Content-Type"] == "image/jpeg"
            image = await image_part.read()
        assert meta is not None
        assert meta["mode"] == "plates" and meta["faces"] == 0 and meta["plates"] >= 1
        assert meta["params"] == {"padding": 0.2, "shrink": 0.0, "blur": 40.0}
        box = meta["detections"][0]["box"]
        # The box covers both plate sources (platedet's plate and the text line grown for blurring).
        assert all(abs(got - want) < 25 for got, want in zip(box, PLATE_BOX, strict=True))
        with Image.open(io.BytesIO(bytes(image))) as blurred:
            assert blurred.size == (1280, 960)

        async with http.post(
            "/api/anonymize/face?response=image", data=form(ASTRONAUT_JPEG), headers=headers
        ) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert "anonymized.jpg" in r.headers["Content-Disposition"]
            assert (await r.read()).startswith(b"\xff\xd8\xff")

        async with http.post(
            "/api/anonymize/all?response=json", data=form(ASTRONAUT_JPEG), headers=headers
        ) as r:
            assert r.status == 200 and r.content_type == "application/json"
            meta = await r.json()
        assert meta["mode"] == "all" and meta["faces"] == 1
