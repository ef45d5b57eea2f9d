"""VehiCore facade without a worker: every documented error row, parameter validation and the timeout."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import FormData

from shared.settings import Settings
from tests.integration.conftest import ClientFactory, GatewayClient

pytestmark = pytest.mark.integration


def image_form(data: bytes | None, filename: str = "image.jpg", **fields: str) -> FormData:
    form = FormData()
    if data is not None:
        form.add_field("image", data, filename=filename, content_type="image/jpeg")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def error(response: Any, status: int, code: str | None) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    assert response.status == status, body
    assert body["message"]
    if code is None:
        assert "code" not in body, body
    else:
        assert body["code"] == code, body
    return body


@pytest.mark.parametrize("path", ["/api/anonymize", "/api/anonymize/face", "/api/anonymize/all"])
async def test_401_unauthorized(client: GatewayClient, astronaut_jpeg: bytes, path: str) -> None:
    response = await client.post(path, data=image_form(astronaut_jpeg))
    await error(response, 401, "UNAUTHORIZED")
    response = await client.post(path, data=image_form(astronaut_jpeg), headers={"X-API-Key": "nope"})
    body = await error(response, 401, "UNAUTHORIZED")
    assert set(body) == {"message", "code"}
    # the native API's Bearer header is not VehiCore's
    response = await client.post(path, data=image_form(astronaut_jpeg), headers={"Authorization": "Bearer x"})
    await error(response, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("query", "fields", "needle"),
    [
        ("?response=xml", {}, "response"),
        (
            "",
            {"response": "null"},
            "response",
        ),  # as a form field too (found by tests/e2e/test_api_fuzzing.py)
        ("?padding=0.05", {}, "padding"),
        ("?padding=0.35", {}, "padding"),
        ("?shrink=0.5", {}, "shrink"),
        ("?shrink=-0.1", {}, "shrink"),
        ("?blur=0", {}, "blur"),
        ("?blur=81", {}, "blur"),
        ("?blur=lots", {}, "blur"),
        ("", {"blur": "81"}, "blur"),  # as a form field too
        ("?sharpen=1", {}, "sharpen"),
        ("", {"sharpen": "1"}, "sharpen"),
    ],
)
async def test_400_invalid_parameters(
    client: GatewayClient,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
    query: str,
    fields: dict[str, str],
    needle: str,
) -> None:
    response = await client.post(
        f"/api/anonymize{query}", data=image_form(astronaut_jpeg, **fields), headers=auth
    )
    body = await error(response, 400, "VALIDATION_ERROR")
    assert needle in body["message"]


async def test_400_missing_or_invalid_image(client: GatewayClient, auth: dict[str, str]) -> None:
    response = await client.post("/api/anonymize", data=image_form(None, padding="0.2"), headers=auth)
    assert "image" in (await error(response, 400, "VALIDATION_ERROR"))["message"]
    response = await client.post("/api/anonymize", data=image_form(b""), headers=auth)
    await error(response, 400, "VALIDATION_ERROR")
    response = await client.post("/api/anonymize", json={"image": "x"}, headers=auth)
    await error(response, 400, "VALIDATION_ERROR")
    truncated = b"\xff\xd8\xff\xe0" + b"\x00" * 100
    response = await client.post("/api/anonymize", data=image_form(truncated), headers=auth)
    await error(response, 400, "VALIDATION_ERROR")


async def test_oversized_is_400(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    small = await make_client(
        settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_upload_bytes": 1000})})
    )
    response = await small.post("/api/anonymize", data=image_form(astronaut_jpeg), headers=auth)
    await error(response, 400, "VALIDATION_ERROR")


async def test_415_unsupported_image(client: GatewayClient, auth: dict[str, str]) -> None:
    response = await client.post(
        "/api/anonymize/all", data=image_form(b"GIF89a" + b"\x00" * 64), headers=auth
    )
    body = await error(response, 415, None)
    assert "GIF" in body["message"]


async def test_503_when_the_job_does_not_finish(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    quick = await make_client(
        settings.model_copy(
            update={"gateway": settings.gateway.model_copy(update={"facade_timeout_seconds": 0.2})}
        )
    )
    response = await quick.post("/api/anonymize?response=json", data=image_form(astronaut_jpeg), headers=auth)
    body = await error(response, 503, None)
    assert response.headers["Retry-After"]
    assert body["job_id"] in body["message"]
    polled = await quick.get(f"/v1/jobs/{body['job_id']}", headers=auth)
    assert polled.status == 200
    assert (await polled.json())["status"] == "queued"


async def test_402_is_never_sent(client: GatewayClient, auth: dict[str, str]) -> None:
    # Veil has no billing: nothing answers INSUFFICIENT_CREDITS; other paths keep the VehiCore shape.
    response = await client.get("/api/anonymize", headers=auth)
    body = await error(response, 405, "METHOD_NOT_ALLOWED")
    assert body["code"] != "INSUFFICIENT_CREDITS"
