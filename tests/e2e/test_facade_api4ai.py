"""api4ai options of the native API on the live stack: a byte-array image, waited for, base64 output."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import ASTRONAUT_JPEG

pytestmark = [pytest.mark.integration, pytest.mark.models]


async def test_buffer_in_base64_out(live_stack: LiveStack) -> None:
    body = {
        "image": {"type": "Buffer", "data": list(ASTRONAUT_JPEG)},
        "objects_to_hide": "Faces only",
        "output": "base64",
        "wait": True,
    }
    headers = {"X-API-Key": live_stack.api_key}
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post("/v1/jobs", json=body, headers=headers) as r:
            assert r.status == 200
            job = await r.json()
        assert job["status"] == "succeeded"
        assert (job["format"], job["width"], job["height"]) == ("JPEG", 512, 512)
        assert [obj["class"] for obj in job["objects"]] == ["Face"]
        box = job["objects"][0]["box"]
        assert 0.25 < box["x"] < 0.4 and 0.05 < box["y"] < 0.2 and 0 < box["w"] < 0.3
        assert base64.b64decode(job["result"]["base64"]).startswith(b"\xff\xd8\xff")
        assert job["result"]["url"]
        async with http.get(f"/v1/jobs/{job['id']}", headers=headers) as r:
            again = await r.json()
        assert again["objects"] == job["objects"] and "base64" not in again["result"]
