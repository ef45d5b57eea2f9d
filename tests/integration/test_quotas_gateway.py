"""Credits and quotas through the gateway (no worker): exactly as many jobs as credits under concurrency,
then 402 in every API's shape; caps answer 429 with Retry-After; Plate Recognizer's /info/ shows the key's
figures."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.quotas import KeyLimits, QuotaStore
from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory, GatewayClient
from tests.integration.test_admission import uploads
from tests.integration.test_facade_plateblurer import basic
from tests.integration.test_facade_plateblurer import error as plateblurer_error
from tests.integration.test_facade_platerecognizer import error as platerecognizer_error
from tests.integration.test_facade_platerecognizer import token, upload_form
from tests.integration.test_facade_vehicore import image_form
from tests.integration.test_gateway_jobs import error_of, multipart, with_changes

pytestmark = pytest.mark.integration


@pytest.fixture
async def quiet_client(make_client: ClientFactory, settings: Settings) -> GatewayClient:
    """The gateway with a queue of its own (no worker takes its jobs) and no rate or queue limit."""
    queue = f"veil:test-quotas:{uuid.uuid4().hex}"
    return await make_client(
        with_changes(
            settings,
            redis={"queue_name": queue, "max_queued_jobs": 0},
            gateway={"submissions_per_second": 0, "facade_timeout_seconds": 0.2},
        )
    )


async def limit(redis: Redis, settings: Settings, key_id: str, **limits: Any) -> QuotaStore:
    quotas = QuotaStore(redis, settings.redis.prefix)
    await quotas.set_limits(key_id, KeyLimits(**limits))
    return quotas


def plateblurer_body(photo: bytes) -> dict[str, str]:
    return {"base64_Photo_String": base64.b64encode(photo).decode(), "photo_url": "NO"}


async def test_five_credits_take_exactly_five_of_twenty_concurrent_submissions(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    store: ObjectStore,
    api_key: tuple[str, str],
    auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    quotas = await limit(redis, settings, api_key[1], credits=5)
    before = uploads(store, settings)

    async def submit() -> Any:
        return await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)

    responses = await asyncio.gather(*(submit() for _ in range(20)))
    statuses = sorted(response.status for response in responses)
    assert statuses == [202] * 5 + [402] * 15
    refused = next(response for response in responses if response.status == 402)
    assert "0 credit(s) left" in await error_of(refused, 402, "INSUFFICIENT_CREDITS")
    state = await quotas.state(api_key[1])
    assert (state.credits_left, state.in_flight, state.used_today) == (0, 5, 5)
    assert uploads(store, settings) == before + 5  # a refused upload is not kept


async def test_no_credits_is_402_in_every_facades_shape(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
) -> None:
    await limit(redis, settings, api_key[1], credits=0)
    vehicore = await quiet_client.post(
        "/api/anonymize", data=image_form(astronaut_jpeg), headers={"X-API-Key": api_key[0]}
    )
    body = await vehicore.json()
    assert vehicore.status == 402 and set(body) == {"message", "code"}, body
    assert body["code"] == "INSUFFICIENT_CREDITS"

    plateblurer = await quiet_client.post(
        "/plateblurer.aspx", json=plateblurer_body(astronaut_jpeg), headers=basic(api_key[0])
    )
    assert "Package expired!" in await plateblurer_error(plateblurer, 402, "1005")

    platerecognizer = await quiet_client.post(
        "/v1/blur", data=upload_form(astronaut_jpeg), headers=token(api_key)
    )
    assert "credit" in await platerecognizer_error(platerecognizer, 403)

    # A bulk job is refused before anything is listed.
    bulk = await quiet_client.post(
        "/v1/bulk", json={"s3": {"bucket": "veil-user-bucket"}}, headers={"X-API-Key": api_key[0]}
    )
    await error_of(bulk, 402, "INSUFFICIENT_CREDITS")


async def test_daily_cap_is_429_with_retry_after_in_every_shape(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    api_key: tuple[str, str],
    auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    await limit(redis, settings, api_key[1], daily_limit=1)
    accepted = await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    assert accepted.status == 202
    refused = await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    assert "daily limit of 1" in await error_of(refused, 429, "QUOTA_EXCEEDED")
    assert 1 <= int(refused.headers["Retry-After"]) <= 24 * 3600  # until 00:00 UTC

    plateblurer = await quiet_client.post(
        "/plateblurer", json=plateblurer_body(astronaut_jpeg), headers=basic(api_key[0])
    )
    assert "Daily requests number exceeded" in await plateblurer_error(plateblurer, 429, "1002")
    assert "Retry-After" in plateblurer.headers

    platerecognizer = await quiet_client.post(
        "/v1/blur", data=upload_form(astronaut_jpeg), headers=token(api_key)
    )
    assert "daily limit" in await platerecognizer_error(platerecognizer, 429)
    assert "Retry-After" in platerecognizer.headers

    vehicore = await quiet_client.post("/api/anonymize", data=image_form(astronaut_jpeg), headers=auth)
    assert vehicore.status == 429 and (await vehicore.json())["code"] == "QUOTA_EXCEEDED"


async def test_monthly_and_concurrency_caps_in_plateblurers_codes(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    api_key: tuple[str, str],
    auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    quotas = await limit(redis, settings, api_key[1], monthly_limit=1)
    assert (await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)).status == 202
    monthly = await quiet_client.post(
        "/plateblurer", json=plateblurer_body(astronaut_jpeg), headers=basic(api_key[0])
    )
    assert "Requests number exceeded!" in await plateblurer_error(monthly, 429, "1004")

    await quotas.set_limits(api_key[1], KeyLimits(max_concurrent=1))  # the queued job holds the one slot
    concurrent = await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    assert "at once" in await error_of(concurrent, 429, "QUOTA_EXCEEDED")
    assert concurrent.headers["Retry-After"] == "2"


async def test_a_refused_image_charges_nothing(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    api_key: tuple[str, str],
    auth: dict[str, str],
) -> None:
    quotas = await limit(redis, settings, api_key[1], credits=1, daily_limit=1)
    refused = await quiet_client.post("/v1/jobs", data=multipart(b"not an image"), headers=auth)
    assert refused.status == 415
    state = await quotas.state(api_key[1])
    assert (state.credits_left, state.used_today, state.in_flight) == (1, 0, 0)


async def test_platerecognizer_info_shows_the_keys_calls(
    quiet_client: GatewayClient,
    redis: Redis,
    settings: Settings,
    api_key: tuple[str, str],
    auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    anonymous = await (await quiet_client.get("/info/")).json()
    assert anonymous["snapshot"] is None and anonymous["version"]

    quotas = await limit(redis, settings, api_key[1], credits=3)
    assert (await quiet_client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)).status == 202
    info = await (await quiet_client.get("/info/", headers=token(api_key))).json()
    assert info["snapshot"]["total_calls"] == 3 and info["snapshot"]["usage"] == {"calls": 1}

    await quotas.set_limits(api_key[1], KeyLimits(monthly_limit=100), fields={"monthly_limit"})
    info = await (await quiet_client.get("/info/", headers=token(api_key))).json()
    assert info["snapshot"]["total_calls"] == 100 and info["snapshot"]["usage"] == {"calls": 1}

    wrong = await quiet_client.get("/info/", headers={"Authorization": "Token nope"})
    await platerecognizer_error(wrong, 403)
