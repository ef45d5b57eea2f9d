"""The native jobs API end to end against real Redis and SeaweedFS (no worker: jobs stay queued)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestServer
from arq.jobs import Job
from arq.jobs import JobStatus as ArqStatus
from PIL import Image
from redis.asyncio import Redis

from cli.embedded import free_port
from gateway.app import create_app
from gateway.backends import connect_redis
from gateway.errors import ErrorInfo, register_error_renderer
from gateway.submission import JobSubmitter
from shared.errors import NotFoundError, ValidationError
from shared.jobs import (
    BlurOptions,
    ImageFormat,
    InputInfo,
    JobError,
    JobStatus,
    ResultInfo,
    Target,
    utcnow,
)
from shared.jobstore import JobStore
from shared.queue import deserialize
from shared.readiness import WorkerInfo, announce
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory, GatewayClient, encode

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"


def with_changes(settings: Settings, **blocks: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with fields of nested blocks replaced (``limits={"max_pixels": 10}``)."""
    update: dict[str, Any] = {}
    for name, changes in blocks.items():
        if name == "url_allowlist":
            update[name] = changes
        else:
            update[name] = getattr(settings, name).model_copy(update=changes)
    return settings.model_copy(update=update)


def multipart(
    image: bytes | None, *, field: str = "image", filename: str = "photo.jpg", **options: str
) -> FormData:
    form = FormData()
    if image is not None:
        form.add_field(field, image, filename=filename, content_type="application/octet-stream")
    for name, value in options.items():
        form.add_field(name, value)
    return form


async def error_of(response: Any, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/json"
    assert set(body) == {"message", "code"}, body
    assert body["code"] == code, body
    assert body["message"]
    message: str = body["message"]
    return message


async def accepted(response: Any) -> str:
    body = await response.json()
    assert response.status == 202, body
    job_id: str = body["id"]
    assert len(job_id) == 32
    assert int(job_id, 16) >= 0
    assert body["status"] == "queued"
    assert body["links"] == {"self": f"/v1/jobs/{job_id}"}
    assert body["created_at"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    return job_id


async def queued_payload(redis: Redis, settings: Settings, job_id: str) -> dict[str, Any]:
    """The arq job in the queue, read back through arq (``arq.jobs.Job``): queued, with the request."""
    job = Job(job_id, redis, _queue_name=settings.redis.queue_name, _deserializer=deserialize)
    assert await job.status() is ArqStatus.queued
    info = await job.info()
    assert info is not None and info.function == "anonymize"
    request: dict[str, Any] = info.args[0]
    return request


# -- accepted submissions --------------------------------------------------------------------------------


async def test_multipart_jpeg_is_stored_recorded_and_queued(
    client: GatewayClient,
    auth: dict[str, str],
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
    settings: Settings,
    store: ObjectStore,
    redis: Redis,
) -> None:
    job_id = await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))

    record = await JobStore(redis, settings.redis.prefix).get(job_id)
    assert record is not None
    assert record.status is JobStatus.QUEUED
    assert record.owner == api_key[1]
    assert record.input == InputInfo(width=512, height=512, format=ImageFormat.JPEG)
    assert record.options == BlurOptions()

    stored = store.get(store.upload_key(job_id))
    assert stored.body == astronaut_jpeg
    assert stored.content_type == "image/jpeg"

    request = await queued_payload(redis, settings, job_id)
    assert request["id"] == job_id
    assert request["source"] == {"bucket": settings.s3.bucket, "key": store.upload_key(job_id)}
    assert request["delete_source"] is True
    assert request["input"] == {"width": 512, "height": 512, "format": "jpeg"}

    response = await client.get(f"/v1/jobs/{job_id}", headers=auth)
    body = await response.json()
    assert response.status == 200
    assert body["id"] == job_id
    assert body["status"] == "queued"
    assert body["input"] == {"width": 512, "height": 512, "format": "jpeg"}
    assert "owner" not in body


async def test_multipart_png_with_options_and_bearer_auth(
    client: GatewayClient,
    api_key: tuple[str, str],
    camera_png: bytes,
    settings: Settings,
    redis: Redis,
) -> None:
    form = multipart(camera_png, filename="camera.png", targets="faces", blur="12.5", padding="0.3")
    form.add_field("keep_metadata", "true")
    response = await client.post("/v1/jobs", data=form, headers={"Authorization": f"Bearer {api_key[0]}"})
    job_id = await accepted(response)
    record = await JobStore(redis, settings.redis.prefix).get(job_id)
    assert record is not None
    assert record.known_input().format is ImageFormat.PNG
    assert record.options == BlurOptions(targets=(Target.FACES,), blur=12.5, padding=0.3, keep_metadata=True)
    request = await queued_payload(redis, settings, job_id)
    assert request["options"]["targets"] == ["faces"]


async def test_exif_orientation_swaps_reported_size(
    client: GatewayClient, auth: dict[str, str], settings: Settings, redis: Redis
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when displayed
    jpeg = encode(Image.new("RGB", (300, 100), "gray"), "JPEG", exif=exif)
    job_id = await accepted(await client.post("/v1/jobs", data=multipart(jpeg), headers=auth))
    record = await JobStore(redis, settings.redis.prefix).get(job_id)
    assert record is not None
    assert (record.known_input().width, record.known_input().height) == (100, 300)


@pytest.mark.parametrize("prefix", ["", "data:image/jpeg;base64,"])
async def test_base64_json(
    client: GatewayClient,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    prefix: str,
    redis: Redis,
    settings: Settings,
) -> None:
    encoded = prefix + base64.b64encode(astronaut_jpeg).decode()
    response = await client.post(
        "/v1/jobs", json={"image_base64": encoded, "targets": ["plates"]}, headers=auth
    )
    job_id = await accepted(response)
    request = await queued_payload(redis, settings, job_id)
    assert request["options"]["targets"] == ["plates"]
    assert request["delete_source"] is True


async def test_webp_is_accepted(client: GatewayClient, auth: dict[str, str]) -> None:
    webp = encode(Image.new("RGB", (64, 48), "white"), "WEBP")
    await accepted(await client.post("/v1/jobs", data=multipart(webp), headers=auth))


@pytest.fixture(scope="module")
def user_bucket(settings: Settings) -> ObjectStore:
    other = ObjectStore(settings.s3.model_copy(update={"bucket": USER_BUCKET}))
    other.ensure_bucket()
    return other


async def test_s3_reference_is_queued_without_copy_or_deletion(
    client: GatewayClient,
    auth: dict[str, str],
    camera_png: bytes,
    user_bucket: ObjectStore,
    unique: str,
    store: ObjectStore,
    redis: Redis,
    settings: Settings,
) -> None:
    key = f"photos/{unique}.png"
    user_bucket.put(key, camera_png, "image/png")
    response = await client.post("/v1/jobs", json={"s3": {"bucket": USER_BUCKET, "key": key}}, headers=auth)
    job_id = await accepted(response)
    request = await queued_payload(redis, settings, job_id)
    assert request["source"] == {"bucket": USER_BUCKET, "key": key}
    assert request["delete_source"] is False
    assert request["input"]["format"] == "png"
    assert not store.exists(store.upload_key(job_id))

    # Veil's own bucket is never an input, whatever the prefix (other keys' uploads and results live there).
    store.put(f"mine/{unique}.png", camera_png, "image/png")
    own = {"s3": {"bucket": settings.s3.bucket, "key": f"mine/{unique}.png"}}
    response = await client.post("/v1/jobs", json=own, headers=auth)
    assert "cannot be used" in await error_of(response, 400, "VALIDATION_ERROR")
    store.delete(f"mine/{unique}.png")


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ({"bucket": "not-allowed", "key": "a.png"}, "not readable"),
        ({"bucket": USER_BUCKET, "key": "missing/nothing.png"}, "no object"),
        ({"bucket": "veil-test", "key": "uploads/0123"}, "cannot be used"),
        ({"bucket": USER_BUCKET}, "s3 must be"),
        ({"bucket": USER_BUCKET, "key": 3}, "s3 must be"),
    ],
)
async def test_s3_reference_refused(
    client: GatewayClient, auth: dict[str, str], user_bucket: ObjectStore, ref: dict[str, object], needle: str
) -> None:
    response = await client.post("/v1/jobs", json={"s3": ref}, headers=auth)
    assert needle in await error_of(response, 400, "VALIDATION_ERROR")


# -- image_url -------------------------------------------------------------------------------------------


@pytest.fixture
async def image_server(astronaut_jpeg: bytes) -> AsyncIterator[str]:
    """A tiny HTTP server on 127.0.0.1 serving a photo, redirects and failures; yields its base URL."""

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=astronaut_jpeg, content_type="image/jpeg")

    async def redirect(request: web.Request) -> web.Response:
        hops = int(request.match_info["hops"])
        target = "/photo.jpg" if hops == 0 else f"/redirect/{hops - 1}"
        return web.Response(status=302, headers={"Location": target})

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nope")

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\xff" * 65536)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/photo.jpg", photo)
    app.router.add_get("/redirect/{hops}", redirect)
    app.router.add_get("/missing.jpg", missing)
    app.router.add_get("/big.jpg", big)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()


async def test_image_url_fetched_when_allowlisted(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    image_server: str,
    redis: Redis,
    store: ObjectStore,
    astronaut_jpeg: bytes,
) -> None:
    client = await make_client(with_changes(settings, url_allowlist=["127.0.0.1"]))  # type: ignore[arg-type]
    job_id = await accepted(
        await client.post("/v1/jobs", json={"image_url": f"{image_server}/photo.jpg"}, headers=auth)
    )
    assert store.get(store.upload_key(job_id)).body == astronaut_jpeg
    assert (await queued_payload(redis, settings, job_id))["delete_source"] is True

    # Redirects are followed (and re-checked) up to the limit.
    await accepted(
        await client.post("/v1/jobs", json={"image_url": f"{image_server}/redirect/3"}, headers=auth)
    )
    response = await client.post("/v1/jobs", json={"image_url": f"{image_server}/redirect/9"}, headers=auth)
    assert "redirects" in await error_of(response, 400, "FETCH_FAILED")

    # A form field works as well as JSON.
    form = FormData({"image_url": f"{image_server}/photo.jpg", "targets": "faces"})
    await accepted(await client.post("/v1/jobs", data=form, headers=auth))


async def test_image_url_failures(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], image_server: str
) -> None:
    client = await make_client(
        with_changes(settings, url_allowlist=["127.0.0.1"], limits={"max_upload_bytes": 1_000_000})  # type: ignore[arg-type]
    )
    response = await client.post("/v1/jobs", json={"image_url": f"{image_server}/missing.jpg"}, headers=auth)
    assert "404" in await error_of(response, 400, "FETCH_FAILED")
    response = await client.post("/v1/jobs", json={"image_url": f"{image_server}/big.jpg"}, headers=auth)
    await error_of(response, 413, "PAYLOAD_TOO_LARGE")
    closed = f"http://127.0.0.1:{free_port()}/photo.jpg"
    response = await client.post("/v1/jobs", json={"image_url": closed}, headers=auth)
    assert "connect" in await error_of(response, 400, "FETCH_FAILED")


@pytest.mark.parametrize(
    "url",
    [
        "{server}/photo.jpg",
        "{server_localhost}/photo.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://10.1.2.3/x.jpg",
        "ftp://example.org/x.jpg",
        "file:///etc/passwd",
    ],
)
async def test_image_url_refused_without_allowlist(
    client: GatewayClient, auth: dict[str, str], image_server: str, url: str
) -> None:
    target = url.format(server=image_server, server_localhost=image_server.replace("127.0.0.1", "localhost"))
    response = await client.post("/v1/jobs", json={"image_url": target}, headers=auth)
    await error_of(response, 400, "URL_NOT_ALLOWED")


# -- refused submissions ---------------------------------------------------------------------------------


async def test_missing_and_wrong_key(client: GatewayClient, astronaut_jpeg: bytes) -> None:
    await error_of(await client.post("/v1/jobs", data=multipart(astronaut_jpeg)), 401, "UNAUTHORIZED")
    response = await client.post(
        "/v1/jobs", data=multipart(astronaut_jpeg), headers={"X-API-Key": "veil_nope"}
    )
    await error_of(response, 401, "UNAUTHORIZED")
    response = await client.get("/v1/jobs/" + "0" * 32, headers={"Authorization": "Bearer veil_nope"})
    await error_of(response, 401, "UNAUTHORIZED")


def _gif() -> bytes:
    return encode(Image.new("P", (8, 8)), "GIF")


def _bmp() -> bytes:
    return encode(Image.new("RGB", (8, 8)), "BMP")


async def test_bad_images(client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes) -> None:
    truncated = astronaut_jpeg[: len(astronaut_jpeg) // 2]
    response = await client.post("/v1/jobs", data=multipart(truncated), headers=auth)
    assert "truncated" in await error_of(response, 400, "VALIDATION_ERROR")
    corrupt_png = b"\x89PNG\r\n\x1a\n" + os.urandom(200)
    await error_of(
        await client.post("/v1/jobs", data=multipart(corrupt_png), headers=auth), 400, "VALIDATION_ERROR"
    )
    random_bytes = b"\x01\x02" + os.urandom(4000)
    response = await client.post("/v1/jobs", data=multipart(random_bytes), headers=auth)
    await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    for unsupported, name in ((_gif(), "GIF"), (_bmp(), "BMP")):
        response = await client.post("/v1/jobs", data=multipart(unsupported), headers=auth)
        assert name in await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    response = await client.post("/v1/jobs", data=multipart(b""), headers=auth)
    await error_of(response, 400, "VALIDATION_ERROR")


async def test_multipart_shape_errors(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    empty = b"--xyz--\r\n"
    headers = {**auth, "Content-Type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/v1/jobs", data=empty, headers=headers)
    assert "no image" in await error_of(response, 400, "VALIDATION_ERROR")

    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg, field="photo"), headers=auth)
    assert "'photo'" in await error_of(response, 400, "VALIDATION_ERROR")

    response = await client.post("/v1/jobs", data=multipart(None, targets="faces"), headers=auth)
    assert "no image" in await error_of(response, 400, "VALIDATION_ERROR")

    headers = {**auth, "Content-Type": "multipart/form-data"}  # no boundary
    response = await client.post("/v1/jobs", data=b"garbage", headers=headers)
    await error_of(response, 400, "VALIDATION_ERROR")

    response = await client.post("/v1/jobs", data=b"hello", headers={**auth, "Content-Type": "text/plain"})
    assert "unsupported body type" in await error_of(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"targets": "cars"}, "targets"),
        ({"targets": ""}, "targets"),
        ({"blur": "500"}, "blur"),
        ({"blur": "0"}, "blur"),
        ({"blur": "soft"}, "blur"),
        ({"padding": "2"}, "padding"),
        ({"shrink": "0.5"}, "shrink"),
        ({"min_score": "-1"}, "min_score"),
        ({"keep_metadata": "perhaps"}, "keep_metadata"),
        ({"colour": "red"}, "colour"),
        ({"colour": "red", "size": "3"}, "colour, size"),
    ],
)
async def test_bad_options_in_form(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes, options: dict[str, str], needle: str
) -> None:
    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg, **options), headers=auth)
    assert needle in await error_of(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'"image"', "must be an object"),
        (b"{}", "no image"),
        (b'{"image_base64": "aGVsbG8=", "image_url": "http://example.org/a.jpg"}', "exactly one"),
        (b'{"image_base64": "!!not base64!!"}', "not valid base64"),
        (b'{"image_base64": "data:text/plain,hello"}', "data: URL"),
        (b'{"image_base64": 12}', "must be a string"),
        (b'{"image_url": ""}', "empty"),
        (b'{"image_base64": "aGVsbG8=", "targets": ["faces", "cats"]}', "targets"),
        (b'{"image_base64": "aGVsbG8=", "blur": 1000}', "blur"),
        (b'{"image_base64": "aGVsbG8=", "sharpen": true}', "sharpen"),
        (b'{"image": "aGVsbG8="}', "multipart"),
    ],
)
async def test_bad_json(client: GatewayClient, auth: dict[str, str], body: bytes, needle: str) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = await client.post("/v1/jobs", data=body, headers=headers)
    assert needle in await error_of(response, 400, "VALIDATION_ERROR")


async def test_size_limits(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    camera_png: bytes,
) -> None:
    small = await make_client(with_changes(settings, limits={"max_upload_bytes": 10_000}))
    response = await small.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    await error_of(response, 413, "PAYLOAD_TOO_LARGE")
    response = await small.post(
        "/v1/jobs", json={"image_base64": base64.b64encode(astronaut_jpeg).decode()}, headers=auth
    )
    await error_of(response, 413, "PAYLOAD_TOO_LARGE")

    # Content-Length is checked before the body is read; a chunked body is cut off while streaming.
    big = b"\xff\xd8\xff" + b"\0" * 2_000_000
    await error_of(await small.post("/v1/jobs", data=multipart(big), headers=auth), 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"image_base64": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}'

    headers = {**auth, "Content-Type": "application/json"}
    await error_of(await small.post("/v1/jobs", data=chunks(), headers=headers), 413, "PAYLOAD_TOO_LARGE")

    few_pixels = await make_client(with_changes(settings, limits={"max_pixels": 10_000}))
    response = await few_pixels.post("/v1/jobs", data=multipart(camera_png), headers=auth)
    assert "pixels" in await error_of(response, 413, "PAYLOAD_TOO_LARGE")


# -- reading jobs ----------------------------------------------------------------------------------------


async def test_unknown_and_foreign_jobs_are_not_found(
    client: GatewayClient, auth: dict[str, str], other_auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    job_id = await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
        foreign = await error_of(await client.get(path, headers=other_auth), 404, "NOT_FOUND")
        unknown_path = path.replace(job_id, "f" * 32)
        unknown = await error_of(await client.get(unknown_path, headers=auth), 404, "NOT_FOUND")
        assert foreign.replace(job_id, "f" * 32) == unknown
    await error_of(await client.get("/v1/jobs/not-a-job-id", headers=auth), 404, "NOT_FOUND")


async def test_result_endpoint(
    client: GatewayClient,
    auth: dict[str, str],
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
    settings: Settings,
    redis: Redis,
) -> None:
    job_id = await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))
    response = await client.get(f"/v1/jobs/{job_id}/result", headers=auth, allow_redirects=False)
    await error_of(response, 409, "NOT_FINISHED")

    jobs = JobStore(redis, settings.redis.prefix)
    record = await jobs.get(job_id)
    assert record is not None
    await jobs.put(
        record.model_copy(
            update={"status": JobStatus.FAILED, "error": JobError(code="DETECTION_FAILED", message="boom")}
        )
    )
    response = await client.get(f"/v1/jobs/{job_id}/result", headers=auth, allow_redirects=False)
    assert await error_of(response, 409, "JOB_FAILED") == "boom"

    result = ResultInfo(
        url="http://s3.example/results/x.jpg?sig=1",
        expires_at=utcnow() + timedelta(hours=24),
        content_type="image/jpeg",
        key="results/x.jpg",
    )
    await jobs.put(record.model_copy(update={"status": JobStatus.SUCCEEDED, "result": result}))
    response = await client.get(f"/v1/jobs/{job_id}/result", headers=auth, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == result.url
    body = await (await client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    assert body["status"] == "succeeded"
    assert body["result"]["url"] == result.url
    assert "key" not in body["result"]


async def test_submitter_wait_returns_on_finish_or_timeout(
    settings: Settings, store: ObjectStore, redis: Redis, camera_png: bytes, api_key: tuple[str, str]
) -> None:
    connection = connect_redis(settings.redis)
    submitter = JobSubmitter(settings, store, connection, poll_interval=0.02)
    try:
        record = await submitter.submit(api_key[1], camera_png, BlurOptions(targets=(Target.FACES,)))
        assert record.status is JobStatus.QUEUED
        assert record.input == InputInfo(width=512, height=512, format=ImageFormat.PNG)

        started = asyncio.get_running_loop().time()
        still_queued = await submitter.wait(record.id, api_key[1], timeout=0.2)
        assert still_queued.status is JobStatus.QUEUED
        assert asyncio.get_running_loop().time() - started >= 0.2

        async def finish_soon() -> None:
            await asyncio.sleep(0.1)
            await submitter.jobs.put(record.model_copy(update={"status": JobStatus.FAILED}))

        finisher = asyncio.create_task(finish_soon())
        finished = await submitter.wait(record.id, api_key[1], timeout=10)
        await finisher
        assert finished.status is JobStatus.FAILED
        with pytest.raises(NotFoundError):
            await submitter.wait(record.id, "someone-else", timeout=0.1)
    finally:
        await submitter.close()
        await connection.aclose(close_connection_pool=True)


async def test_submitter_wait_is_woken_by_the_finished_record_not_by_polling(
    settings: Settings, store: ObjectStore, camera_png: bytes, api_key: tuple[str, str]
) -> None:
    connection = connect_redis(settings.redis)
    # Polls far apart: only the notification published with the finished record can end the wait early.
    submitter = JobSubmitter(settings, store, connection, poll_interval=30, fallback_interval=30)
    try:
        record = await submitter.submit(api_key[1], camera_png, BlurOptions(targets=(Target.FACES,)))

        async def finish_soon() -> None:
            await asyncio.sleep(0.3)
            await submitter.jobs.put(record.model_copy(update={"status": JobStatus.RUNNING}))
            await asyncio.sleep(0.2)
            await submitter.jobs.put(record.model_copy(update={"status": JobStatus.SUCCEEDED}))

        loop = asyncio.get_running_loop()
        started = loop.time()
        finisher = asyncio.create_task(finish_soon())
        finished = await submitter.wait(record.id, api_key[1], timeout=20)
        await finisher
        assert finished.status is JobStatus.SUCCEEDED
        assert loop.time() - started < 5
    finally:
        await submitter.close()
        await connection.aclose(close_connection_pool=True)


# -- plumbing: routing errors, health, readiness, outages ----------------------------------------------------


async def test_routing_errors_are_json(client: GatewayClient, auth: dict[str, str]) -> None:
    await error_of(await client.get("/nowhere", headers=auth), 404, "NOT_FOUND")
    response = await client.delete("/v1/jobs", headers=auth)
    await error_of(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


async def test_error_renderer_per_prefix(settings: Settings) -> None:
    app = create_app(settings)

    def vendor_shape(request: web.Request, error: ErrorInfo) -> web.StreamResponse:
        return web.json_response({"Error": {"Code": error.code, "Text": error.message}}, status=error.status)

    async def boom(request: web.Request) -> web.Response:
        raise ValidationError("bad thing")

    register_error_renderer(app, "/compat/", vendor_shape)
    app.router.add_get("/compat/thing", boom)
    app.router.add_get("/native/thing", boom)
    async with TestServer(app) as server:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(server.make_url("/compat/thing")) as response:
                assert response.status == 400
                assert await response.json() == {"Error": {"Code": "VALIDATION_ERROR", "Text": "bad thing"}}
            async with session.get(server.make_url("/compat/missing")) as response:
                assert (await response.json())["Error"]["Code"] == "NOT_FOUND"
            async with session.get(server.make_url("/native/thing")) as response:
                assert await response.json() == {"message": "bad thing", "code": "VALIDATION_ERROR"}


async def test_healthz(client: GatewayClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_needs_a_worker(
    make_client: ClientFactory, settings: Settings, unique: str, redis: Redis
) -> None:
    isolated = with_changes(settings, redis={"prefix": f"ready-{unique}"})
    client = await make_client(isolated)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["workers"]["ok"] is False

    worker = WorkerInfo(
        id=unique, providers=["CPUExecutionProvider"], models=["faces"], started_at="now", host="test"
    )
    await announce(redis, isolated.redis.prefix, worker)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["workers"] == {"ok": True, "count": 1, "models": ["faces"]}


async def test_redis_down_is_503(
    make_client: ClientFactory, settings: Settings, astronaut_jpeg: bytes
) -> None:
    down = with_changes(settings, redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    client = await make_client(down)
    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers={"X-API-Key": "veil_x"})
    await error_of(response, 503, "QUEUE_UNAVAILABLE")
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["checks"]["redis"]["ok"] is False
    assert (await client.get("/healthz")).status == 200


async def _leftovers(redis: Redis, prefix: str, queue: str) -> list[bytes]:
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:job:*")]
    return keys + [member for member, _ in await redis.zrange(queue, 0, -1, withscores=True)]


async def test_s3_down_is_503_and_leaves_nothing(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    unique: str,
    redis: Redis,
) -> None:
    # The default prefix (where the API key lives) but a private queue, so leftovers are easy to see.
    down = with_changes(
        settings,
        s3={"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        redis={"queue_name": f"queue-{unique}"},
    )
    client = await make_client(down)
    before = [key async for key in redis.scan_iter(match=f"{settings.redis.prefix}:job:*")]
    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    await error_of(response, 503, "STORE_UNAVAILABLE")
    after = [key async for key in redis.scan_iter(match=f"{settings.redis.prefix}:job:*")]
    assert sorted(after) == sorted(before)
    assert await redis.zcard(down.redis.queue_name) == 0


async def test_queue_failure_after_upload_cleans_up(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    unique: str,
    redis: Redis,
) -> None:
    """The queue key holds the wrong Redis type, so the enqueue fails after the upload and the record."""
    broken = with_changes(
        settings,
        redis={"queue_name": f"broken-queue-{unique}"},
        s3={"uploads_prefix": f"uploads-{unique}/"},
    )
    await redis.set(broken.redis.queue_name, b"not a sorted set")
    client = await make_client(broken)
    before = [key async for key in redis.scan_iter(match=f"{settings.redis.prefix}:job:*")]
    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    await error_of(response, 503, "QUEUE_UNAVAILABLE")
    after = [key async for key in redis.scan_iter(match=f"{settings.redis.prefix}:job:*")]
    assert sorted(after) == sorted(before)
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3.endpoint_url,
        aws_access_key_id=settings.s3.access_key_id,
        aws_secret_access_key=settings.s3.secret_access_key,
        region_name=settings.s3.region,
    )
    listing = s3.list_objects_v2(Bucket=settings.s3.bucket, Prefix=broken.s3.uploads_prefix)
    assert listing.get("KeyCount", 0) == 0
