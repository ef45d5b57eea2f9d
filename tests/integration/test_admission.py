"""Admission against real Redis: a key over its rate gets 429, a full queue 503, each with Retry-After,
and a refused upload leaves nothing in the store or among the jobs."""

from __future__ import annotations

import uuid

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory, GatewayClient
from tests.integration.test_facade_platerecognizer import error, token, upload_form
from tests.integration.test_gateway_jobs import error_of, multipart, with_changes

pytestmark = pytest.mark.integration


def uploads(store: ObjectStore, settings: Settings) -> int:
    keys, _ = store.list_keys(store.bucket, settings.s3.uploads_prefix, 10_000)
    return len(keys)


async def post_photo(client: GatewayClient, auth: dict[str, str], photo: bytes) -> int:
    response = await client.post("/v1/jobs", data=multipart(photo), headers=auth)
    return response.status


async def test_a_key_over_its_rate_gets_429_and_others_do_not(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    auth: dict[str, str],
    other_auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    client = await make_client(
        with_changes(settings, gateway={"submissions_per_second": 0.5, "submission_burst": 2})
    )
    assert [await post_photo(client, auth, astronaut_jpeg) for _ in range(2)] == [202, 202]  # the burst
    before = uploads(store, settings)
    refused = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    message = await error_of(refused, 429, "RATE_LIMITED")
    assert "0.5 jobs per second" in message
    assert 1 <= int(refused.headers["Retry-After"]) <= 2  # one interval (2 s), rounded up
    assert uploads(store, settings) == before  # nothing stored for the refused upload
    # The limit is per key: another key still has its whole burst.
    assert await post_photo(client, other_auth, astronaut_jpeg) == 202


async def test_a_full_queue_refuses_new_jobs_with_503(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    # A queue of its own (no worker drains it here), allowed to hold one job.
    queue = f"veil:test-admission:{uuid.uuid4().hex}"
    client = await make_client(with_changes(settings, redis={"queue_name": queue, "max_queued_jobs": 1}))
    assert await post_photo(client, auth, astronaut_jpeg) == 202
    before = uploads(store, settings)
    refused = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    assert "queue is full" in await error_of(refused, 503, "QUEUE_FULL")
    assert refused.headers["Retry-After"] == "5"
    assert uploads(store, settings) == before
    # A bulk job is one more submission: refused too, before anything is recorded.
    bulk = await client.post("/v1/bulk", json={"s3": {"bucket": "veil-user-bucket"}}, headers=auth)
    await error_of(bulk, 503, "QUEUE_FULL")


async def test_no_limits_when_both_are_off(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(
        with_changes(settings, redis={"max_queued_jobs": 0}, gateway={"submissions_per_second": 0})
    )
    assert [await post_photo(client, auth, astronaut_jpeg) for _ in range(3)] == [202, 202, 202]


async def test_plate_recognizer_facade_answers_429_in_its_shape(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(
        with_changes(
            settings,
            gateway={"submissions_per_second": 0.1, "submission_burst": 1, "facade_timeout_seconds": 0.2},
        )
    )
    first = await client.post("/v1/blur", data=upload_form(astronaut_jpeg), headers=token(api_key))
    assert first.status == 503  # no worker here: the facade's timeout answer, with the job id
    refused = await client.post("/v1/blur", data=upload_form(astronaut_jpeg), headers=token(api_key))
    assert "jobs per second" in await error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1


async def test_an_image_url_is_not_fetched_for_a_refused_key_and_a_look_costs_no_rate(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(
        with_changes(settings, gateway={"submissions_per_second": 0.1, "submission_burst": 2})
    )
    loopback = multipart(None, image_url="http://127.0.0.1:9/photo.jpg")  # the SSRF guard refuses it
    # Admitted, so fetched (and refused by the guard): looking before the fetch used none of the burst...
    await error_of(await client.post("/v1/jobs", data=loopback, headers=auth), 400, "URL_NOT_ALLOWED")
    assert [await post_photo(client, auth, astronaut_jpeg) for _ in range(2)] == [202, 202]
    # ...which is now spent: the URL is refused before anything is fetched.
    refused = await client.post("/v1/jobs", data=loopback, headers=auth)
    await error_of(refused, 429, "RATE_LIMITED")
