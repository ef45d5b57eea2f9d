"""The malformed-image corpus (tests/malformed.py) through every input path of the real gateway, without a
worker: what the gateway refuses is a 4xx in each path's own error shape with a message that says why,
never a 5xx; what it accepts is queued as the format its bytes are. What the worker does with the accepted
ones is tests/e2e/test_malformed_jobs.py."""

from __future__ import annotations

import pytest

from shared.jobs import ImageFormat
from tests.integration.conftest import GatewayClient
from tests.malformed import (
    API4AI,
    NATIVE_PATHS,
    PATHS,
    Blurred,
    Case,
    Refused,
    accepted,
    error_of,
    post,
    refused,
    rendered,
)

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:Corrupt EXIF data")]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", refused(), ids=lambda case: case.name)
async def test_refused_with_a_clear_4xx_on_every_path(
    client: GatewayClient, api_key: tuple[str, str], case: Case, path: str
) -> None:
    outcome = case.outcome
    assert isinstance(outcome, Refused)
    request = post(path, case, api_key[0])
    async with client.post(request.url, headers=request.headers, data=request.data, json=request.json) as r:
        body = await r.json()
        status = r.status
    want_status, want_code = rendered(path, outcome.status, outcome.code)
    code, message = error_of(path, body)
    assert (status, code) == (want_status, want_code), body
    assert outcome.says.lower() in message.lower(), body


@pytest.mark.parametrize("path", NATIVE_PATHS)
@pytest.mark.parametrize("case", accepted(), ids=lambda case: case.name)
async def test_accepted_images_are_queued_as_what_their_bytes_are(
    client: GatewayClient, api_key: tuple[str, str], case: Case, path: str
) -> None:
    # api4ai's wait would wait for a worker this test does not run: asked for no wait, it answers 202.
    request = post(path, case, api_key[0], wait=path != API4AI)
    async with client.post(request.url, headers=request.headers, data=request.data, json=request.json) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["id"]
    async with client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": api_key[0]}) as r:
        job = await r.json()
    assert job["status"] == "queued"
    # The format is sniffed from the bytes (a PNG named image.jpg is a PNG); the size from the header.
    want = case.outcome.content_type if isinstance(case.outcome, Blurred) else case.content_type
    assert ImageFormat(job["input"]["format"]).content_type == want
    assert (job["input"]["width"], job["input"]["height"]) == (512, 512)
