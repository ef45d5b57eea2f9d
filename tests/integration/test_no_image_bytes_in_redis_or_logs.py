"""What leaves Veil is the blurred result, and images never pass through Redis nor into the logs
(docs/privacy.md). Images go through every input and output path: native upload, base64, api4ai byte array
with ``wait`` and ``output=base64``, an ``s3`` input, a bulk job with an output bucket, a webhook, the
result redirect, and the VehiCore, Plate Recognizer (with a logo) and PlateBlurer (with crops) facades.
Every output is checked to be the worker's result (byte for byte, or pixel for pixel where PlateBlurer
redraws it), never the input; every command Redis receives meanwhile is recorded with ``MONITOR``, and
every log line the processes emit at DEBUG through Veil's own logging set-up (``configure_logging``) is
kept: no piece of any input, logo or result appears in either, raw (as MONITOR or Python escapes it),
base64, hex or as a list of byte values. The gateway and an arq worker run in-process against the
session's real Redis and SeaweedFS; the detector is a stand-in that finds one plate and blurs the whole
image, so that every result differs from its input.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import cv2
import numpy as np
import pytest
from arq.worker import Worker, func
from PIL import Image
from redis.asyncio import Redis

from shared.bulk import EXPAND_FUNCTION
from shared.jobs import BlurOptions, JobStatus
from shared.logging import configure_logging
from shared.queue import ANONYMIZE_FUNCTION, arq_redis_settings, deserialize, serialize
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer
from tests.fakes import worker_state
from tests.integration.conftest import ClientFactory, GatewayClient
from tests.webhook_receiver import Receiver
from workers import imageops
from workers.bulk import expand_bulk
from workers.context import CTX_KEY
from workers.detectors.base import RawDetection
from workers.notify import DELIVER_FUNCTION, deliver_webhook
from workers.pipeline import AnonymizeResult
from workers.tasks import anonymize

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"
OUTPUT_BUCKET = "veil-user-output"
SIDE = 64


class WholeImageBlur:
    """Real decoding and encoding; the "detector" finds one plate in the middle and the whole image is
    blurred, so every result differs from its input."""

    def __init__(self) -> None:
        self.providers = ["CPUExecutionProvider"]

    def run(self, data: bytes, options: BlurOptions, **kwargs: Any) -> AnonymizeResult:
        image = imageops.decode(data, max_pixels=kwargs["max_pixels"])
        pixels = cv2.GaussianBlur(image.pixels, (0, 0), 3)
        w, h = image.width, image.height
        plate = RawDetection(label="plate", score=0.9, box=(w / 4, h / 4, 3 * w / 4, 3 * h / 4))
        return AnonymizeResult(
            image=imageops.encode(pixels, image.format),
            content_type=image.format.content_type,
            format=image.format,
            width=w,
            height=h,
            detections=[plate],
            regions=[(0, 0, w, h)],
            timings_ms={},
        )


def noise_png(seed: int) -> bytes:
    """A photo-sized PNG of noise: its bytes occur nowhere else, so any piece of it is a fingerprint."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return bytes(buffer.tobytes())


def monitor_repr(data: bytes) -> bytes:
    """``data`` as MONITOR prints an argument (Redis's sdscatrepr, without the quotes)."""
    escapes = {b"\\": b"\\\\", b'"': b'\\"', b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t", b"\a": b"\\a"}
    escapes[b"\b"] = b"\\b"
    out = bytearray()
    for byte in data:
        char = bytes([byte])
        if char in escapes:
            out += escapes[char]
        elif 0x20 <= byte <= 0x7E:
            out += char
        else:
            out += b"\\x%02x" % byte
    return bytes(out)


def fingerprints(data: bytes) -> list[bytes]:
    """Pieces of ``data`` (near its start but past a PNG's fixed header, and from its middle) in every
    encoding it could travel in: raw, base64 and URL-safe base64 (whatever its alignment in a larger blob),
    hex, and as a list of byte values (a JSON array or Buffer)."""
    found: list[bytes] = []
    for start in (60, len(data) // 4, len(data) // 2, 3 * len(data) // 4):
        piece = data[start : start + 30]
        if len(data) < start + 32:  # too short to tell apart from anything else
            continue
        found += [monitor_repr(piece), repr(piece)[2:-1].encode(), piece.hex().encode()]
        found += [",".join(map(str, piece)).encode(), ", ".join(map(str, piece)).encode()]
        for shift in range(3):
            aligned = data[start + shift : start + shift + 30]
            found += [base64.b64encode(aligned), base64.urlsafe_b64encode(aligned)]
    return found


class Monitor:
    """Everything Redis is sent while it runs (``MONITOR``, raw lines)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.lines: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"*1\r\n$7\r\nMONITOR\r\n")
        await self._writer.drain()
        assert (await reader.readline()).startswith(b"+OK")
        self._task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            self.lines.append(line)

    async def until(self, needle: bytes, within: float = 5.0) -> None:
        for _ in range(int(within / 0.02)):
            if any(needle in line for line in self.lines):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"MONITOR never showed {needle!r}")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._task


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the message, and a logged exception's traceback


@pytest.fixture
def logged() -> Iterator[Kept]:
    """Every line logged, at DEBUG, through the logging set-up every Veil process uses."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3", "s3transfer")}
    configure_logging("DEBUG")
    kept = Kept()
    root.addHandler(kept)
    yield kept
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)


@pytest.fixture
async def monitor(settings: Settings) -> AsyncIterator[Monitor]:
    watching = Monitor(settings.redis.url)
    await watching.start()
    yield watching
    await watching.stop()


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    """Its own queue (only this test's worker takes from it); loopback allowed for the webhook receiver."""
    redis = settings.redis.model_copy(update={"queue_name": f"veil:test-queue:{uuid.uuid4().hex[:8]}"})
    return settings.model_copy(update={"redis": redis, "url_allowlist": ["127.0.0.1"]})


@pytest.fixture
async def worker(tuned: Settings, store: ObjectStore, redis: Redis) -> AsyncIterator[Worker]:
    state = worker_state(
        tuned,
        redis,
        store,
        WholeImageBlur(),
        transfer=ObjectTransfer.open(store),
        inference=ThreadPoolExecutor(2),
        name="privacy-test",
    )
    arq_worker = Worker(
        functions=[
            func(anonymize, name=ANONYMIZE_FUNCTION, keep_result=0),
            func(expand_bulk, name=EXPAND_FUNCTION),
            func(deliver_webhook, name=DELIVER_FUNCTION),
        ],
        queue_name=tuned.redis.queue_name,
        redis_settings=arq_redis_settings(tuned.redis),
        job_serializer=serialize,
        job_deserializer=deserialize,
        handle_signals=False,
        poll_delay=0.02,
        max_jobs=4,
        ctx={CTX_KEY: state},
    )
    running = asyncio.ensure_future(arq_worker.async_run())
    yield arq_worker
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await arq_worker.close()
    await state.transfer.close()


async def _finished(client: GatewayClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    for _ in range(500):
        job: dict[str, Any] = await (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            assert job["status"] == JobStatus.SUCCEEDED, job
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


async def _presigned(url: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        return await response.read()


def _rgb(data: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    with Image.open(io.BytesIO(data)) as opened:
        return np.asarray(opened.convert("RGB"))


async def test_outputs_are_the_blurred_result_and_no_image_bytes_reach_redis_or_logs(
    make_client: ClientFactory,
    tuned: Settings,
    store: ObjectStore,
    redis: Redis,
    auth: dict[str, str],
    receiver: Receiver,
    logged: Kept,
    monitor: Monitor,
    worker: Worker,
) -> None:
    client = await make_client(tuned)
    token = auth["X-API-Key"]
    images: dict[str, bytes] = {}  # what went in, by path
    results: dict[str, bytes] = {}  # what came out, by path

    def blurred(name: str) -> bytes:
        """What the worker's stand-in makes of the input sent on path ``name``: the only bytes that may
        leave."""
        return WholeImageBlur().run(images[name], BlurOptions(), max_pixels=tuned.limits.max_pixels).image

    async def native(name: str, **kwargs: Any) -> dict[str, Any]:
        response = await client.post("/v1/jobs", headers=auth, **kwargs)
        assert response.status in (200, 202), await response.text()
        job = await _finished(client, auth, (await response.json())["id"])
        results[name] = await _presigned(job["result"]["url"])
        return job

    # Native: a multipart upload, then base64 with a webhook, then the api4ai byte array, waited for.
    images["upload"] = noise_png(1)
    form = aiohttp.FormData()
    form.add_field("image", images["upload"], filename="a.png", content_type="image/png")
    job = await native("upload", data=form)
    redirect = await client.get(f"/v1/jobs/{job['id']}/result", headers=auth, allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == job["result"]["url"]
    inline = await (await client.get(f"/v1/jobs/{job['id']}?output=base64", headers=auth)).json()
    results["upload, output=base64"] = base64.b64decode(inline["result"]["base64"])
    assert results["upload, output=base64"] == results["upload"]

    images["base64"] = noise_png(2)
    body = {"image_base64": base64.b64encode(images["base64"]).decode(), "callback_url": receiver.url}
    await native("base64", json=body)

    images["byte array"] = noise_png(3)
    api4ai: dict[str, object] = {"image": list(images["byte array"]), "wait": True, "output": "base64"}
    response = await client.post("/v1/jobs", headers=auth, json=api4ai)
    assert response.status == 200, await response.text()
    results["byte array"] = base64.b64decode((await response.json())["result"]["base64"])

    # A client's object as input, and a bulk job over a client's folder with blurred copies out.
    images["s3"] = noise_png(4)
    key = f"privacy/{uuid.uuid4().hex}/one.png"
    await asyncio.to_thread(store.put, key, images["s3"], "image/png", USER_BUCKET)
    await native("s3", json={"s3": {"bucket": USER_BUCKET, "key": key}})
    prefix = f"privacy-bulk/{uuid.uuid4().hex}/"
    images["bulk"] = noise_png(5)
    await asyncio.to_thread(store.put, f"{prefix}b.png", images["bulk"], "image/png", USER_BUCKET)
    out = {"bucket": OUTPUT_BUCKET, "prefix": f"out/{prefix}"}
    response = await client.post(
        "/v1/bulk", headers=auth, json={"s3": {"bucket": USER_BUCKET, "prefix": prefix}, "output": out}
    )
    assert response.status == 202, await response.text()
    bulk_id = (await response.json())["id"]
    for _ in range(500):
        bulk = await (await client.get(f"/v1/bulk/{bulk_id}", headers=auth)).json()
        if bulk["status"] == "finished":
            break
        await asyncio.sleep(0.02)
    assert bulk["counts"]["succeeded"] == 1, bulk
    results["bulk"] = await asyncio.to_thread(lambda: store.get(f"out/{prefix}b.png", OUTPUT_BUCKET).body)

    # VehiCore, the image answer.
    images["vehicore"] = noise_png(6)
    form = aiohttp.FormData()
    form.add_field("image", images["vehicore"], filename="v.png", content_type="image/png")
    response = await client.post("/api/anonymize?response=image", data=form, headers={"X-API-Key": token})
    assert response.status == 200, await response.text()
    results["vehicore"] = await response.read()

    # Plate Recognizer with a logo, the image returned inline.
    images["platerecognizer"], images["logo"] = noise_png(7), noise_png(8)
    form = aiohttp.FormData()
    form.add_field("upload", images["platerecognizer"], filename="p.png", content_type="image/png")
    form.add_field("logo", images["logo"], filename="logo.png", content_type="image/png")
    form.add_field("plates", "5")
    response = await client.post("/v1/blur", data=form, headers={"Authorization": f"Token {token}"})
    assert response.status == 200, await response.text()
    results["platerecognizer"] = base64.b64decode((await response.json())["blur"]["base64"])

    # PlateBlurer: the photo with the boxes drawn, and the crops.
    images["plateblurer"] = noise_png(9)
    body = {"base64_Photo_String": base64.b64encode(images["plateblurer"]).decode(), "boundingBoxCrop": "YES"}
    basic = base64.b64encode(f"any:{token}".encode()).decode()
    response = await client.post("/plateblurer", json=body, headers={"Authorization": f"Basic {basic}"})
    assert response.status == 200, await response.text()
    answer = await response.json()
    (prediction,) = answer["predictions"]
    results["plateblurer photo"] = base64.b64decode(answer["final_photo"])
    results["plateblurer crop"] = base64.b64decode(prediction["boundingBoxPhoto"])

    # Every output is the blurred result, never the input: byte for byte where Veil's result is returned
    # as is, pixel for pixel where PlateBlurer redraws it (its crop is cut from the result, not the input).
    for name in ("upload", "base64", "byte array", "s3", "bulk", "vehicore", "platerecognizer"):
        assert results[name] == blurred(name) != images[name], name
    assert results["upload, output=base64"] == blurred("upload")
    expected = _rgb(blurred("plateblurer"))
    box = prediction["boundingBox"]
    x1, y1 = round(box["left"] * SIDE), round(box["top"] * SIDE)
    x2, y2 = x1 + round(box["width"] * SIDE), y1 + round(box["height"] * SIDE)
    assert np.array_equal(_rgb(results["plateblurer crop"]), expected[y1:y2, x1:x2])
    photo = _rgb(results["plateblurer photo"])
    inside = (slice(y1 + 4, y2 - 4), slice(x1 + 4, x2 - 4))  # clear of the drawn outline
    assert np.array_equal(photo[inside], expected[inside]) and np.array_equal(photo[:y1], expected[:y1])
    assert not np.array_equal(expected, _rgb(images["plateblurer"]))

    for _ in range(500):  # the webhook, sent by its own queue job
        if receiver.received:
            break
        await asyncio.sleep(0.02)
    assert receiver.received, "the webhook was not delivered"
    webhook = receiver.received[0][0]
    await asyncio.sleep(0.3)  # the last commands' lines

    transcript = list(monitor.lines)
    seen = b"".join(transcript)
    assert job["id"].encode() in seen  # MONITOR did see this test's traffic
    everything = [*images.items(), *((f"result of {name}", data) for name, data in results.items())]
    assert all(fingerprints(data) for _, data in everything)  # each one large enough to be told apart
    leaks = [name for name, data in everything if any(fp in seen for fp in fingerprints(data))]
    assert leaks == [], f"image bytes seen by Redis: {leaks}"
    assert not any(fp in webhook for _, data in everything for fp in fingerprints(data))  # a URL, no bytes
    log = "\n".join(logged.lines).encode()
    assert f"job {job['id']}".encode() in log  # the worker's lines were kept
    in_logs = [name for name, data in everything if any(fp in log for fp in fingerprints(data))]
    assert in_logs == [], f"image bytes in the logs: {in_logs}"

    # The check itself works: the same bytes, once written to Redis or logged, are found.
    control = f"veil-test:control:{uuid.uuid4().hex}"
    await redis.set(control, images["upload"] + results["upload"], ex=60)
    await monitor.until(control.encode())
    later = b"".join(monitor.lines[len(transcript) :])
    for data in (images["upload"], results["upload"]):
        middle = data[len(data) // 2 : len(data) // 2 + 30]
        assert monitor_repr(middle) in later
    await redis.delete(control)
    kept = len(logged.lines)
    logging.getLogger("veil.test").debug(
        "control %r %s", images["upload"], base64.b64encode(results["upload"])
    )
    later = "\n".join(logged.lines[kept:]).encode()
    assert all(
        any(fp in later for fp in fingerprints(data)) for data in (images["upload"], results["upload"])
    )
