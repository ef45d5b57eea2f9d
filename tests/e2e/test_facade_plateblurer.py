"""PlateBlurer facade on the live stack: the documented request body with a real plate photo."""

from __future__ import annotations

import base64
import io

import aiohttp
import pytest
from PIL import Image

from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import PLATE_BOX, PLATE_JPEG

pytestmark = [pytest.mark.integration, pytest.mark.models]


async def test_documented_request(live_stack: LiveStack) -> None:
    body = {
        "base64_Photo_String": base64.b64encode(PLATE_JPEG).decode(),
        "photo_url": "NO",
        "boundingBoxCrop": "YES",
    }
    credentials = base64.b64encode(f"your_username:{live_stack.api_key}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Accept": "application/json"}
    async with (
        aiohttp.ClientSession(live_stack.url) as http,
        http.post("/plateblurer.aspx", json=body, headers=headers) as r,
    ):
        assert r.status == 200
        result = await r.json()
    assert set(result) == {"created", "predictions", "final_photo"}
    assert result["created"].endswith("Z")
    prediction = result["predictions"][0]
    assert set(prediction) == {"probability", "tagId", "tagName", "boundingBox", "boundingBoxPhoto"}
    assert prediction["tagName"] == "License Plate" and prediction["probability"] > 0.2
    box = prediction["boundingBox"]
    tx1, ty1, tx2, _ = PLATE_BOX
    assert abs(box["left"] - tx1 / 1280) < 0.02 and abs(box["top"] - ty1 / 960) < 0.02
    assert abs(box["width"] - (tx2 - tx1) / 1280) < 0.03
    with Image.open(io.BytesIO(base64.b64decode(prediction["boundingBoxPhoto"]))) as crop:
        # As wide as the box above (it covers both plate sources): within the same 3 % of the photo.
        assert abs(crop.size[0] - (tx2 - tx1)) < 0.03 * 1280
    with Image.open(io.BytesIO(base64.b64decode(result["final_photo"]))) as final:
        assert final.size == (1280, 960)
