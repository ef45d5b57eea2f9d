"""api4ai inputs and outputs on the native API, without a worker: Buffer / byte-array images,
objects_to_hide, output and wait validation, and the SSRF guard on URL inputs."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from tests.integration.conftest import ClientFactory, GatewayClient

pytestmark = pytest.mark.integration


async def accepted(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    assert response.status == 202, body
    return body


async def test_buffer_and_byte_array(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    data = list(astronaut_jpeg)
    for image in ({"type": "Buffer", "data": data}, data):
        created = await accepted(
            await client.post(
                "/v1/jobs", json={"image": image, "objects_to_hide": "Faces only"}, headers=auth
            )
        )
        job = await (await client.get(created["links"]["self"], headers=auth)).json()
        assert job["options"]["targets"] == ["faces"]
        assert job["input"] == {"width": 512, "height": 512, "format": "jpeg"}
        assert "objects" not in job  # only once it succeeded


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"image": {"type": "Blob", "data": [1]}}, 400, "Buffer"),
        ({"image": [1, 300]}, 400, "0..255"),
        ({"image": []}, 400, "empty"),
        ({"image": [255, 216, 255], "image_url": "http://example.org/a.jpg"}, 400, "exactly one"),
        ({"image": "aGVsbG8="}, 400, "multipart"),
        ({"image_base64": "aGVsbG8=", "objects_to_hide": "Cars"}, 400, "objects_to_hide"),
        ({"image_base64": "aGVsbG8=", "objects_to_hide": "Everything", "targets": "faces"}, 400, "not both"),
        ({"image_base64": "aGVsbG8=", "output": "path"}, 400, "output"),
        ({"image_base64": "aGVsbG8=", "wait": "later"}, 400, "wait"),
        ({"image_base64": "aGVsbG8=", "logo_key": "uploads/x"}, 400, "logo_key"),  # internal only
        ({"image_url": "http://169.254.169.254/"}, 400, "link-local"),
    ],
)
async def test_bad_inputs(
    client: GatewayClient, auth: dict[str, str], body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.post("/v1/jobs", json=body, headers=auth)
    answer = await response.json()
    assert response.status == status, answer
    assert needle in answer["message"], answer


async def test_oversized_byte_array(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    small = await make_client(
        settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_upload_bytes": 1000})})
    )
    response = await small.post("/v1/jobs", json={"image": list(astronaut_jpeg[:1001])}, headers=auth)
    assert response.status == 413


async def test_wait_without_a_worker_is_still_202(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    quick = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"facade_timeout_seconds": 0.2})}
    )
    client = await make_client(quick)
    response = await client.post("/v1/jobs", json={"image": list(astronaut_jpeg), "wait": 10}, headers=auth)
    body = await accepted(response)
    assert body["status"] == "queued"
    response = await client.get(f"{body['links']['self']}?output=jpeg", headers=auth)
    assert response.status == 400
