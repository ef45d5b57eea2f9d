"""Videos through ``POST /v1/jobs`` without a worker (jobs stay queued): every container accepted with its
``input`` probed, every bad video refused with a clear 400/413/415 body, the vendor facades refusing
videos, and ``POST /v1/jobs/{id}/cancel``. Against the session's real Redis and SeaweedFS."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import FormData
from arq.jobs import Job
from redis.asyncio import Redis

from shared.jobcancel import CancelFlags
from shared.jobs import JobRequest, JobStatus, VideoFormat
from shared.jobstore import JobStore
from shared.queue import deserialize
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory, GatewayClient
from tests.video_clips import audio_only, make_clip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip(8, (96, 96), fps=8)


def form(data: bytes, field: str = "image", filename: str = "clip.mp4", **options: str) -> FormData:
    body = FormData()
    body.add_field(field, data, filename=filename, content_type="application/octet-stream")
    for name, value in options.items():
        body.add_field(name, value)
    return body


async def error_of(response: Any, status: int, code: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"message", "code"}, body
    assert body["code"] == code, body
    message: str = body["message"]
    return message


def video_limits(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"video": settings.video.model_copy(update=changes)})


async def queued_request(redis: Redis, settings: Settings, job_id: str) -> JobRequest:
    """The queued arq job's request, read back through arq."""
    job = Job(job_id, redis, _queue_name=settings.redis.queue_name, _deserializer=deserialize)
    info = await job.info()
    assert info is not None
    return JobRequest.model_validate(info.args[0])


@pytest.mark.parametrize("container", ["mp4", "mov", "mkv", "webm"])
async def test_each_container_is_queued_with_its_video_input(
    client: GatewayClient,
    auth: dict[str, str],
    settings: Settings,
    redis: Redis,
    store: ObjectStore,
    container: str,
) -> None:
    data = make_clip(8, (96, 64), fps=8, container=container)
    response = await client.post("/v1/jobs", data=form(data, filename=f"a.{container}"), headers=auth)
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    job = await (await client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    info = job["input"]
    assert info["format"] == container
    assert (info["width"], info["height"], info["fps"]) == (96, 64, 8.0)
    assert info["frames"] in (8, 9)  # Matroska states no count: duration x rate
    assert info["duration"] == pytest.approx(1.0, abs=0.15)
    assert info["codec"] == ("vp8" if container == "webm" else "h264")
    assert job["progress"] is None  # only once a worker runs it
    request = await queued_request(redis, settings, job_id)
    assert request.version == 2  # a worker of before refuses it unread
    head = store.head(request.source.key)
    assert head["ContentType"] == VideoFormat(container).content_type


async def test_video_field_alias_and_base64(client: GatewayClient, auth: dict[str, str], clip: bytes) -> None:
    response = await client.post("/v1/jobs", data=form(clip, field="video"), headers=auth)
    assert response.status == 202, await response.text()
    encoded = base64.b64encode(clip).decode()
    response = await client.post("/v1/jobs", json={"image_base64": encoded}, headers=auth)
    assert response.status == 202, await response.text()
    both = form(clip, field="video")
    both.add_field("image", clip, filename="b.mp4")
    message = await error_of(await client.post("/v1/jobs", data=both, headers=auth), 400, "VALIDATION_ERROR")
    assert "exactly one" in message


async def test_photo_input_keeps_its_shape(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes, redis: Redis, settings: Settings
) -> None:
    response = await client.post("/v1/jobs", data=form(astronaut_jpeg, filename="a.jpg"), headers=auth)
    job_id = (await response.json())["id"]
    job = await (await client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
    assert job["input"] == {"width": 512, "height": 512, "format": "jpeg"}
    assert (await queued_request(redis, settings, job_id)).version == 1  # every worker takes it


async def test_not_a_video_with_a_video_name_is_415(client: GatewayClient, auth: dict[str, str]) -> None:
    response = await client.post("/v1/jobs", data=form(b"just some text, not a film\n" * 4), headers=auth)
    message = await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "not a supported image or video" in message and "MP4" in message


async def test_truncated_mp4_is_400(client: GatewayClient, auth: dict[str, str], clip: bytes) -> None:
    response = await client.post("/v1/jobs", data=form(clip[: len(clip) // 2]), headers=auth)
    message = await error_of(response, 400, "VALIDATION_ERROR")
    assert "MP4 video is truncated" in message


async def test_garbage_after_an_ftyp_box_is_400(client: GatewayClient, auth: dict[str, str]) -> None:
    data = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free"
    message = await error_of(
        await client.post("/v1/jobs", data=form(data), headers=auth), 400, "VALIDATION_ERROR"
    )
    assert "no index (moov box)" in message


async def test_audio_only_is_415(client: GatewayClient, auth: dict[str, str]) -> None:
    response = await client.post("/v1/jobs", data=form(audio_only(0.5), filename="a.m4a"), headers=auth)
    message = await error_of(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert message == "the MP4 file has no video stream (audio streams only)"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"max_duration_seconds": 0.5}, "the video is 1.0 s long, over the limit of 0.5 s"),
        ({"max_pixels_per_frame": 96 * 96 - 1}, "96x96 = 9216 pixels, over the limit of 9215 per frame"),
        ({"max_frames": 5}, "the video has 8 frames, over the limit of 5"),
    ],
)
async def test_over_a_video_limit_is_413(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    clip: bytes,
    changes: dict[str, Any],
    expected: str,
) -> None:
    client = await make_client(video_limits(settings, **changes))
    response = await client.post("/v1/jobs", data=form(clip), headers=auth)
    assert expected in await error_of(response, 413, "PAYLOAD_TOO_LARGE")


async def test_over_the_video_byte_limit_is_413(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], clip: bytes
) -> None:
    limits = settings.limits.model_copy(update={"max_video_bytes": len(clip) - 1, "max_upload_bytes": 1000})
    client = await make_client(settings.model_copy(update={"limits": limits}))
    response = await client.post("/v1/jobs", data=form(clip), headers=auth)
    assert "over the limit" in await error_of(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_photo_over_the_upload_limit_stays_413_under_the_video_limit(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    limits = settings.limits.model_copy(update={"max_upload_bytes": 1000})
    client = await make_client(settings.model_copy(update={"limits": limits}))
    response = await client.post("/v1/jobs", data=form(astronaut_jpeg, filename="a.jpg"), headers=auth)
    assert "the image is" in await error_of(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_facade_refuses_a_video_with_its_own_415(
    client: GatewayClient, auth: dict[str, str], clip: bytes
) -> None:
    response = await client.post("/api/anonymize/all", data=form(clip), headers=auth)  # VehiCore
    body = await response.json()
    assert response.status == 415, body
    assert "code" not in body  # VehiCore's shape: a message only
    assert body["message"] == "MP4 videos are not supported here; send JPEG, PNG or WebP"


async def test_cancel_a_queued_job(
    client: GatewayClient, auth: dict[str, str], clip: bytes, redis: Redis, settings: Settings
) -> None:
    job_id = (await (await client.post("/v1/jobs", data=form(clip), headers=auth)).json())["id"]
    response = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert response.status == 202, await response.text()
    assert (await response.json())["status"] == "queued"  # it ends CANCELLED when a worker comes to it
    assert await CancelFlags(redis, settings.redis.prefix).cancelled(job_id)


async def test_cancel_refusals(
    client: GatewayClient, auth: dict[str, str], clip: bytes, redis: Redis, settings: Settings
) -> None:
    missing = await client.post(f"/v1/jobs/{'0' * 32}/cancel", headers=auth)
    await error_of(missing, 404, "NOT_FOUND")
    job_id = (await (await client.post("/v1/jobs", data=form(clip), headers=auth)).json())["id"]
    jobs = JobStore(redis, settings.redis.prefix)
    record = await jobs.get(job_id)
    assert record is not None
    await jobs.put(record.model_copy(update={"status": JobStatus.SUCCEEDED}))
    response = await client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    assert await error_of(response, 409, "JOB_FINISHED") == "the job is succeeded: nothing to cancel"
