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
    await _wait_for(receiver, 3)  # one per child, and bulk.finished
    events = [orjson.loads(delivery) for delivery, _ in receiver.received]
    jobs = {event["job"]["id"] for event in events if event["event"] == "job.succeeded"}
    assert jobs == {job["id"] for job in report["jobs"]}
    (finished,) = [event for event in events if event["event"] == "bulk.finished"]
    assert finished["bulk"]["status"] == "finished" and finished["bulk"]["progress"]["succeeded"] == 2


async def _deliveries(
    http: aiohttp.ClientSession, path: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    async with http.get(f"{path}/deliveries", headers=headers) as response:
        listed: dict[str, Any] = await response.json()
        assert response.status == 200, listed
    attempts: list[dict[str, Any]] = listed["deliveries"]
    return attempts


async def test_a_failing_receiver_is_retried_until_it_takes_it_and_can_ask_again(
    live_stack: LiveStack, receiver: Receiver
) -> None:
    headers = {"X-API-Key": live_stack.api_key}
    receiver.status = 503
    form = aiohttp.FormData()
    form.add_field("image", _png(astronaut_bgr()), filename="a.png")
    form.add_field("callback_url", receiver.url)
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post("/v1/jobs", data=form, headers=headers) as response:
            created = await response.json()
            assert response.status == 202, created
        job = f"/v1/jobs/{created['id']}"
        await _wait_for(receiver, 2)  # the first retry waits 1-2 s, the second 2-4 s
        receiver.status = 200
        await _wait_for(receiver, 3)
        deadline = time.monotonic() + 30
        while (attempts := await _deliveries(http, job, headers))[-1]["outcome"] != "delivered":
            assert time.monotonic() < deadline, attempts
            await asyncio.sleep(0.1)
        assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
            (1, 503, "retrying"),
            (2, 503, "retrying"),
            (3, 200, "delivered"),
        ]
        async with http.post(f"{job}/deliveries", headers=headers) as response:
            assert response.status == 202, await response.json()
        await _wait_for(receiver, 4)
    ids = {sent[ID_HEADER] for _, sent in receiver.received}
    assert ids == {message_id(created["id"], "job.succeeded")}  # one message, to deduplicate on
    for body, sent in receiver.received:
        Webhook(live_stack.webhook_secret).verify(body, sent)


async def test_cancelling_a_bulk_job_midway(
    live_stack: LiveStack, store: ObjectStore, receiver: Receiver
) -> None:
    prefix = f"cancel/{uuid.uuid4().hex[:8]}/"
    names = [f"{n:02d}.png" for n in range(40)]
    photo = _png(cv2.resize(astronaut_bgr(), (128, 128)))
    for name in names:
        store.put(prefix + name, photo, "image/png", bucket="veil-user-bucket")
    headers = {"X-API-Key": live_stack.api_key}
    body = {
        "s3": {"bucket": "veil-user-bucket", "prefix": prefix},
        "output": {"bucket": "veil-user-output", "prefix": f"blurred/{prefix}"},
        "callback_url": receiver.url,
    }
    async with aiohttp.ClientSession(live_stack.url) as http:
        async with http.post("/v1/bulk", json=body, headers=headers) as response:
            bulk = f"/v1/bulk/{(await response.json())['id']}"
        while True:  # cancel once a child has finished: some others run, the rest wait in the queue
            async with http.get(bulk, headers=headers) as response:
                report = await response.json()
            if report["status"] != "listing" and report["progress"]["succeeded"] > 0:
                break
            await asyncio.sleep(0.05)
        async with http.delete(bulk, headers=headers) as response:
            cancelled = await response.json()
            assert response.status == 202, cancelled
        deadline = time.monotonic() + 120
        while report["status"] != "cancelled":
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.2)
            async with http.get(f"{bulk}?limit=100", headers=headers) as response:
                report = await response.json()
        ran = {child["id"] for child in report["jobs"] if child["status"] == "succeeded"}
        await _wait_for_event(receiver, "bulk.finished")
        await _wait_for(receiver, len(ran) + 1)
        hook = await _deliveries(http, bulk, headers)

    progress = report["progress"]
    assert progress["total"] == len(names) and progress["queued"] == progress["running"] == 0
    assert progress["succeeded"] + progress["failed"] + progress["cancelled"] == len(names)
    assert progress["succeeded"] >= 1 and progress["cancelled"] >= 1 and progress["eta_seconds"] == 0
    for child in report["jobs"]:
        name = child["key"].removeprefix(prefix)
        copied = store.exists(f"blurred/{prefix}{name}", bucket="veil-user-output")
        assert store.exists(prefix + name, bucket="veil-user-bucket")  # originals are never touched
        if child["status"] == "succeeded":
            assert copied
        else:
            assert child["error"]["code"] == "CANCELLED" and not copied, child
    # A webhook per child that ran, none for the cancelled ones, and bulk.finished once, signed.
    events = [(orjson.loads(raw), sent) for raw, sent in receiver.received]
    finished = [(event, sent) for event, sent in events if event["event"] == "bulk.finished"]
    assert len(finished) == 1 and [a["outcome"] for a in hook] == ["delivered"]
    event, sent = finished[0]
    assert sent[ID_HEADER] == message_id(report["id"], "bulk.finished")
    assert event["bulk"]["status"] == "cancelled" and event["bulk"]["progress"] == progress
    Webhook(live_stack.webhook_secret).verify(receiver.received[events.index(finished[0])][0], sent)
    assert {event["job"]["id"] for event, _ in events if event["event"].startswith("job.")} == ran


async def _wait_for_event(receiver: Receiver, name: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not any(orjson.loads(body)["event"] == name for body, _ in receiver.received):
        assert time.monotonic() < deadline, [orjson.loads(body)["event"] for body, _ in receiver.received]
        await asyncio.sleep(0.1)
