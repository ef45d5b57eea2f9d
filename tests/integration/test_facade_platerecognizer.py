"""Plate Recognizer Blur facade without a worker: errors (400/403/413), SSRF guard on upload_url,
/info/, the on-premise listener and the timeout answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import FormData

from cli.embedded import free_port
from shared.settings import Settings
from tests.integration.conftest import ClientFactory, GatewayClient

pytestmark = pytest.mark.integration


def token(api_key: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Token {api_key[0]}"}


def upload_form(data: bytes | None, **fields: str) -> FormData:
    form = FormData()
    if data is not None:
        form.add_field("upload", data, filename="car.jpg", content_type="image/jpeg")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def error(response: Any, status: int) -> str:
    body = await response.json()
    assert response.status == status, body
    assert set(body) <= {"error", "job_id"} and body["error"], body
    message: str = body["error"]
    return message


def quick(settings: Settings, **gateway: object) -> Settings:
    changes = {"facade_timeout_seconds": 0.2, **gateway}
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=changes)})


async def test_403_missing_or_wrong_token(client: GatewayClient, astronaut_jpeg: bytes) -> None:
    for headers in ({}, {"Authorization": "Token nope"}, {"Authorization": "Bearer x"}, {"X-API-Key": "x"}):
        response = await client.post(
            "/v1/blur", data=upload_form(astronaut_jpeg, faces="10"), headers=headers
        )
        await error(response, 403)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"skip_regexp": "AB("}, "skip_regexp"),
        ({"skip_regexp": "A" * 101}, "skip_regexp"),
        ({"faces": "11"}, "faces"),
        ({"plates": "ten"}, "plates"),
        ({"et": "150"}, "et"),
        ({"xmin": "10"}, "xmax"),
        ({"overlap": "99"}, "overlap"),
        ({"split": "sometimes"}, "split"),
        ({"copy_metadata": "x"}, "copy_metadata"),
        ({"face_max_resolution": "1"}, "face_max_resolution"),
        ({"config": "{"}, "config"),
        ({"logo": "/logos/ours.png"}, "logo"),
        ({"mmc": "true"}, "mmc"),
    ],
)
async def test_400_bad_parameters(
    client: GatewayClient,
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
    fields: dict[str, str],
    needle: str,
) -> None:
    response = await client.post(
        "/v1/blur", data=upload_form(astronaut_jpeg, **fields), headers=token(api_key)
    )
    assert needle in await error(response, 400)


async def test_400_inputs(client: GatewayClient, api_key: tuple[str, str], astronaut_jpeg: bytes) -> None:
    headers = token(api_key)
    response = await client.post("/v1/blur", data=upload_form(None, faces="10"), headers=headers)
    assert "upload" in await error(response, 400)
    response = await client.post("/v1/blur", json={"upload_url": "http://example.org/a.jpg"}, headers=headers)
    await error(response, 400)
    response = await client.post("/v1/blur", data=upload_form(b"GIF89a" + b"\0" * 32), headers=headers)
    assert "GIF" in await error(response, 400)  # an unsupported image is a 400 here, not 415
    bad_logo = upload_form(astronaut_jpeg, faces="10")
    bad_logo.add_field("logo", b"not an image", filename="logo.png", content_type="image/png")
    response = await client.post("/v1/blur", data=bad_logo, headers=headers)
    assert "logo" in await error(response, 400)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/a.jpg",
        "file:///etc/passwd",
        "http://[::1]/",
    ],
)
async def test_upload_url_goes_through_the_ssrf_guard(
    client: GatewayClient, api_key: tuple[str, str], astronaut_jpeg: bytes, url: str
) -> None:
    # upload_url has priority over upload, and is refused before anything is fetched
    data = upload_form(astronaut_jpeg, upload_url=url, faces="10")
    response = await client.post("/v1/blur", data=data, headers=token(api_key))
    await error(response, 400)


async def test_413_too_large(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    small = await make_client(
        settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_upload_bytes": 1000})})
    )
    response = await small.post(
        "/v1/blur", data=upload_form(astronaut_jpeg, plates="5"), headers=token(api_key)
    )
    await error(response, 413)


async def test_info(client: GatewayClient) -> None:
    response = await client.get("/info/")
    body = await response.json()
    assert response.status == 200
    assert set(body) == {"version", "snapshot"} and body["snapshot"] is None
    assert body["version"].count(".") == 2


async def test_timeout_answers_with_the_job_id(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(quick(settings))
    logo = upload_form(astronaut_jpeg, faces="10", plates="10")
    logo.add_field("logo", astronaut_jpeg, filename="logo.jpg", content_type="image/jpeg")
    response = await client.post("/v1/blur", data=logo, headers=token(api_key))
    message = await error(response, 503)
    job_id = (await response.json())["job_id"]
    assert job_id in message
    polled = await client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": api_key[0]})
    options = (await polled.json())["options"]
    assert options["face_strength"] == 10 and options["plate_strength"] == 10
    assert options["logo_key"].startswith(settings.s3.uploads_prefix)


async def test_onprem_listener(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    port = free_port()
    await make_client(quick(settings, platerecognizer_port=port))
    base = f"http://{settings.gateway.host}:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/info/") as response:
            assert response.status == 200
            assert (await response.json())["snapshot"] is None
        # no token: accepted like the vendor's SDK (the job just does not finish here: no worker)
        async with http.post(f"{base}/", data=upload_form(astronaut_jpeg, faces="10")) as response:
            assert response.status == 503
            assert (await response.json())["job_id"]
        headers = {"Authorization": "Token wrong"}
        async with http.post(f"{base}/", data=upload_form(astronaut_jpeg), headers=headers) as response:
            await error(response, 403)
        async with http.post(f"{base}/", data=upload_form(astronaut_jpeg, skip_regexp="x(")) as response:
            await error(response, 400)
        async with http.get(f"{base}/v1/jobs") as response:  # only the vendor's paths live here
            await error(response, 404)


async def test_onprem_listener_off_by_default(client: GatewayClient) -> None:
    response = await client.post("/", data=upload_form(b"x"))
    assert response.status in (404, 405)
