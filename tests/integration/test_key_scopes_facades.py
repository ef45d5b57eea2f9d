"""Scopes hold on the vendor facades too, answered in each vendor's error shape: a ``read`` key cannot
submit (403), a ``submit`` key cannot read Plate Recognizer's ``/info/`` (403); no job is queued."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore, Scope
from shared.jobstore import JobStore
from shared.settings import Settings
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration


async def _key(settings: Settings, *scopes: Scope) -> tuple[str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        token, key = await ApiKeyStore(redis, settings.redis.prefix).create("facades", scopes=scopes)
    finally:
        await redis.aclose()
    return token, key.id


def _form(field: str, image: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field(field, image, filename="car.jpg", content_type="image/jpeg")
    return form


async def test_a_read_key_cannot_submit_through_any_facade(
    client: GatewayClient, redis: Redis, settings: Settings, astronaut_jpeg: bytes
) -> None:
    token, key_id = await _key(settings, Scope.READ)
    lacks = "this API key lacks the 'submit' scope"

    vehicore = await client.post(
        "/api/anonymize?response=json", data=_form("image", astronaut_jpeg), headers={"X-API-Key": token}
    )
    assert vehicore.status == 403
    body = await vehicore.json()
    assert body["code"] == "FORBIDDEN"
    assert body["message"].startswith(lacks)

    recognizer = await client.post(
        "/v1/blur", data=_form("upload", astronaut_jpeg), headers={"Authorization": f"Token {token}"}
    )
    assert recognizer.status == 403
    assert (await recognizer.json())["error"].startswith(lacks)

    basic = "Basic " + base64.b64encode(f"user:{token}".encode()).decode()
    photo = base64.b64encode(astronaut_jpeg).decode()
    blurer = await client.post(
        "/plateblurer",
        json={"base64_Photo_String": photo, "photo_url": "NO"},
        headers={"Authorization": basic},
    )
    assert blurer.status == 403
    [item] = await blurer.json()
    assert set(item) == {"cd", "description"}
    assert lacks in item["description"]

    assert await JobStore(redis, settings.redis.prefix).ids_of_owner(key_id) == []


async def test_a_submit_only_key_cannot_read_plate_recognizers_info(
    client: GatewayClient, settings: Settings
) -> None:
    token, _ = await _key(settings, Scope.SUBMIT)
    response = await client.get("/info/", headers={"Authorization": f"Token {token}"})
    assert response.status == 403
    assert "'read' scope" in (await response.json())["error"]
