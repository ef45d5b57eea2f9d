"""Credits on the live stack (gateway and worker processes): a key with 5 credits gets exactly 5 of 20
concurrent images, then 402 in the native, VehiCore and PlateBlurer shapes; a job that fails in the worker
refunds its credit; the day's usage counts what happened, once."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore
from shared.quotas import KeyLimits, QuotaStore
from shared.usage import UsageStore
from tests.e2e.conftest import LiveStack
from tests.e2e.facade_helpers import ASTRONAUT_JPEG
from tests.malformed import png_corrupt_idat

pytestmark = [pytest.mark.integration, pytest.mark.models]

POLL_SECONDS = 0.2
JOB_DEADLINE_SECONDS = 180.0  # a bound for a hung job, not a timing assertion


def image_form(data: bytes, filename: str = "car.jpg") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="application/octet-stream")
    return form


async def post_image(session: aiohttp.ClientSession, stack: LiveStack, token: str, data: bytes) -> Any:
    async with session.post(
        f"{stack.url}/v1/jobs", data=image_form(data, "photo.png"), headers={"X-API-Key": token}
    ) as response:
        return response.status, await response.json()


async def finished(session: aiohttp.ClientSession, stack: LiveStack, token: str, job_id: str) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOB_DEADLINE_SECONDS
    while loop.time() < deadline:
        async with session.get(f"{stack.url}/v1/jobs/{job_id}", headers={"X-API-Key": token}) as response:
            status: str = (await response.json())["status"]
        if status in ("succeeded", "failed"):
            return status
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"job {job_id} did not finish")


async def test_credits_are_spent_exactly_refunded_on_failure_and_counted(live_stack: LiveStack) -> None:
    settings = live_stack.settings
    redis = Redis.from_url(settings.redis.url)
    try:
        token, key = await ApiKeyStore(redis, settings.redis.prefix).create("credits-e2e")
        quotas = QuotaStore(redis, settings.redis.prefix)
        await quotas.set_limits(key.id, KeyLimits(credits=5))
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(
                *(post_image(session, live_stack, token, ASTRONAUT_JPEG) for _ in range(20))
            )
            assert sorted(status for status, _ in answers) == [202] * 5 + [402] * 15
            assert all(body["code"] == "INSUFFICIENT_CREDITS" for status, body in answers if status == 402)

            async with session.post(
                f"{live_stack.url}/api/anonymize?response=json",
                data=image_form(ASTRONAUT_JPEG),
                headers={"X-API-Key": token},
            ) as vehicore:
                assert vehicore.status == 402
                assert (await vehicore.json())["code"] == "INSUFFICIENT_CREDITS"
            photo = base64.b64encode(ASTRONAUT_JPEG).decode()
            async with session.post(
                f"{live_stack.url}/plateblurer.aspx",
                json={"base64_Photo_String": photo, "photo_url": "NO"},
                headers={"Authorization": "Basic " + base64.b64encode(f"any:{token}".encode()).decode()},
            ) as plateblurer:
                assert plateblurer.status == 402
                assert (await plateblurer.json())[0]["cd"] == "1005"

            accepted = [body["id"] for status, body in answers if status == 202]
            outcomes = [await finished(session, live_stack, token, job_id) for job_id in accepted]
            assert outcomes == ["succeeded"] * 5
            assert (await quotas.state(key.id)).credits_left == 0

            # One more credit, spent on an image the gateway accepts and the worker cannot decode.
            assert await quotas.add_credits(key.id, 1) == 1
            status, body = await post_image(session, live_stack, token, png_corrupt_idat().data)
            assert status == 202, body
            assert await finished(session, live_stack, token, body["id"]) == "failed"
        state = await quotas.state(key.id)
        assert (state.credits_left, state.in_flight) == (1, 0)
        today = datetime.now(UTC).date()
        [usage] = await UsageStore(redis, settings.redis.prefix).days(key.id, today, today)
        assert (usage.submitted, usage.succeeded, usage.failed, usage.credits) == (6, 5, 1, 5)
        assert usage.detections.get("face", 0) >= 5 and usage.megapixels > 0
    finally:
        await redis.aclose()
