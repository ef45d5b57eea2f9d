"""PlateBlurer facade without a worker: the error list (1001, 1013, 1014, 2001), the SSRF guard on
photo_url and the timeout answer."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from shared.settings import Settings
from tests.integration.conftest import ClientFactory, GatewayClient

pytestmark = pytest.mark.integration


def basic(password: str, user: str = "your_username") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def error(response: Any, status: int, cd: str) -> str:
    body = await response.json()
    assert response.status == status, body
    assert isinstance(body, list) and len(body) == 1, body
    assert set(body[0]) <= {"cd", "description", "job_id"} and body[0]["cd"] == cd, body
    description: str = body[0]["description"]
    assert description
    return description


async def test_1001_auth(client: GatewayClient, api_key: tuple[str, str]) -> None:
    body = {"base64_Photo_String": "aGk=", "photo_url": "NO"}
    for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Basic !!"}, basic("wrong")):
        response = await client.post("/plateblurer", json=body, headers=headers)
        await error(response, 401, "1001")
    # the API key is the password; the user name in the header is the key in the example, not the user
    response = await client.post("/plateblurer", json=body, headers=basic("x", user=api_key[0]))
    await error(response, 401, "1001")


@pytest.mark.parametrize(
    ("body", "cd"),
    [
        (b"", "1013"),
        (b'{"base64_Photo_String": "NO", "photo_url": "NO", "boundingBoxCrop": "YES"}', "1013"),
        (b"{bad json", "1014"),
        (b'{"base64_Photo_String": "aGk=", "photo_url": "http://example.org/a.jpg"}', "1014"),
        (b'{"base64_Photo_String": "%%%", "photo_url": "NO"}', "1014"),
        (b'{"base64_Photo_String": "aGk=", "boundingBoxCrop": 3}', "1014"),
        (b'{"base64_Photo_String": "aGVsbG8=", "photo_url": "NO"}', "2001"),  # not an image
        (b'{"photo_url": "http://169.254.169.254/latest/"}', "2001"),  # the SSRF guard
        (b'{"photo_url": "http://127.0.0.1:9/car.jpg"}', "2001"),
    ],
)
async def test_invalid_requests(
    client: GatewayClient, api_key: tuple[str, str], body: bytes, cd: str
) -> None:
    headers = {**basic(api_key[0]), "Content-Type": "application/json"}
    for path in ("/plateblurer", "/plateblurer.aspx"):
        response = await client.post(path, data=body, headers=headers)
        await error(response, 400, cd)


async def test_1013_over_5mb(client: GatewayClient, api_key: tuple[str, str]) -> None:
    big = b'{"base64_Photo_String": "' + b"A" * (5 * 1024 * 1024) + b'"}'
    headers = {**basic(api_key[0]), "Content-Type": "application/json"}
    response = await client.post("/plateblurer", data=big, headers=headers)
    assert "5 MB" in await error(response, 413, "1013")


async def test_timeout_answers_with_the_job_id(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    quick = settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"facade_timeout_seconds": 0.2})}
    )
    client = await make_client(quick)
    body = {"base64_Photo_String": base64.b64encode(astronaut_jpeg).decode(), "photo_url": "NO"}
    response = await client.post("/plateblurer", json=body, headers=basic(api_key[0]))
    description = await error(response, 503, "2001")
    job_id = (await response.json())[0]["job_id"]
    assert job_id in description
