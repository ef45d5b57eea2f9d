"""Bulk jobs over a customer's bucket and signed webhooks, through the live stack with the real models."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import cv2
import numpy as np
import orjson
import pytest
from standardwebhooks import Webhook

from shared.storage import ObjectStore
from shared.webhooks import ID_HEADER, message_id
from tests.e2e.conftest import LiveStack
from tests.images import astronaut_bgr, make_plate_scene
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.models]


def _png(image: Any) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


async def _wait_for(receiver: Receiver, count: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, receiver.received
        await asyncio.sleep(0.1)


async def test_native_job_webhook_is_signed(live_stack: LiveStack, receiver: Receiver) -> None:
    form = aiohttp.FormData()
    form.add_field("image", _png(astronaut_bgr()), filename="a.png")
    form.add_field("callback_url", receiver.url)
    async with (
        aiohttp.ClientSession(live_stack.url) as http,
        http.post("/v1/jobs", data=form, headers={"X-API-Key": live_stack.api_key}) as response,
    ):
        created = await response.json()
        assert response.status == 202, created
    await _wait_for(receiver, 1)
    body, headers = receiver.received[0]
    event = Webhook(live_stack.webhook_secret).verify(body, headers)
    assert headers[ID_HEADER] == message_id(created["id"], "job.succeeded")
    assert event["event"] == "job.succeeded"
    assert event["job"]["id"] == created["id"]
    assert event["job"]["result"]["url"].startswith("http")


async def test_bulk_blurs_a_prefix_into_the_output_bucket(
    live_stack: LiveStack, store: ObjectStore, receiver: Receiver
) -> None:
    prefix = f"fleet/{uuid.uuid4().hex[:8]}/"
    scene, _ = make_plate_scene()
    originals = {"front/car.png": scene, "driver.png": astronaut_bgr()}
    for name, image in originals.items():
        store.put(prefix + name, _png(image), "image/png", bucket="veil-user-bucket")

    headers = {"X-API-Key": live_stack.api_key}
    body = {
        "s3": {"bucket": "veil-user-bucket", "prefix": prefix},
        "output": {"bucket": "veil-user-output", "prefix": f"blurred/{prefix}"},
        "callback_url": receiver.url,
    }
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post("/v1/bulk", json=body, headers=headers) as response:
            created = await response.json()
            assert response.status == 202, created
        deadline = time.monotonic() + 90
        while True:
            async with http.get(f"/v1/bulk/{created['id']}", headers=headers) as response:
                report = await response.json()
            if report["status"] == "finished":
                break
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.2)

    assert report["counts"]["succeeded"] == 2, report
    for name, image in originals.items():
        # The customer's originals stay; blurred copies land under the output prefix.
        assert store.exists(prefix + name, bucket="veil-user-bucket")
        copy = store.get(f"blurred/{prefix}{name}", bucket="veil-user-output")
        blurred = cv2.imdecode(np.frombuffer(copy.body, np.uint8), cv2.IMREAD_COLOR)
        assert blurred is not None
        assert blurred.shape == image.shape
        assert np.abs(blurred.astype(int) - image.astype(int)).max() > 30  # something was blurred
    await _wait_for(receiver, 2)
    jobs = {orjson.loads(delivery)["job"]["id"] for delivery, _ in receiver.received}
    assert jobs == {job["id"] for job in report["jobs"]}
