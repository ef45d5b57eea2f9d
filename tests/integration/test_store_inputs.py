"""Which stored objects a client may name as input: never Veil's own bucket (other keys' uploads and
results live there), and only canonical keys and prefixes, so the gateway's checks see exactly the object
the store (which normalises ``/x``, ``a//b``, ``a/../b``) would serve. Strength 0 ("detect, don't blur")
is the Plate Recognizer facade's alone, never a native option."""

from __future__ import annotations

from typing import Any

import pytest

from shared.settings import Settings
from shared.storage import ObjectStore
from tests.integration.conftest import ClientFactory, GatewayClient
from tests.integration.test_gateway_jobs import accepted, error_of, multipart, with_changes

pytestmark = pytest.mark.integration

USER_BUCKET = "veil-user-bucket"
OUTPUT_BUCKET = "veil-user-output"


async def _refused(client: GatewayClient, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    response = await client.post(path, json=body, headers=headers)
    return await error_of(response, 400, "VALIDATION_ERROR")


async def test_a_second_key_never_gets_the_first_keys_upload_back(
    make_client: ClientFactory,
    settings: Settings,
    store: ObjectStore,
    auth: dict[str, str],
    other_auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    # Even an operator who lists Veil's own bucket as readable does not open it up.
    client = await make_client(
        with_changes(settings, s3={"readable_buckets": [USER_BUCKET, settings.s3.bucket]})
    )
    victim = await accepted(await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth))
    upload = store.upload_key(victim)
    assert store.exists(upload)
    result = store.result_key(victim, "jpg")
    store.put(result, astronaut_jpeg, "image/jpeg")  # as a worker would have written it
    veil = settings.s3.bucket
    attempts = [
        (veil, upload),
        (veil, f"/{upload}"),
        (veil, f"//{upload}"),
        (veil, f"uploads/../{upload}"),
        (veil, f"./{upload}"),
        (veil, result),
        (veil, f"/{result}"),
        (veil, "mine/photo.png"),  # anything in Veil's bucket
        (USER_BUCKET, f"../{veil}/{upload}"),  # path-style URLs: `..` would climb into Veil's bucket
        (USER_BUCKET, f"x/../../{veil}/{upload}"),
        (USER_BUCKET, f"/../{veil}/{upload}"),
    ]
    for bucket, key in attempts:
        message = await _refused(client, "/v1/jobs", {"s3": {"bucket": bucket, "key": key}}, other_auth)
        assert "s3" in message, (bucket, key, message)
    store.delete(result)


@pytest.mark.parametrize(
    "key", ["./x.png", "x/../y.png", "a//b.png", "/a.png", "//a.png", "dir/", "a\\b.png", "a\x01b.png", "."]
)
async def test_non_canonical_keys_are_400_not_503(
    client: GatewayClient, auth: dict[str, str], user_bucket: ObjectStore, key: str
) -> None:
    message = await _refused(client, "/v1/jobs", {"s3": {"bucket": USER_BUCKET, "key": key}}, auth)
    assert "s3.key" in message


@pytest.fixture(scope="module")
def user_bucket(settings: Settings) -> ObjectStore:
    other = ObjectStore(settings.s3.model_copy(update={"bucket": USER_BUCKET}))
    other.create_bucket_if_missing(USER_BUCKET)
    return other


@pytest.mark.parametrize("name", ["face_strength", "plate_strength"])
async def test_strength_is_not_a_native_option(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes, name: str
) -> None:
    response = await client.post("/v1/jobs", data=multipart(astronaut_jpeg, **{name: "0"}), headers=auth)
    message = await error_of(response, 400, "VALIDATION_ERROR")
    assert "unknown option" in message and name in message
    body = {"image": list(astronaut_jpeg), "objects_to_hide": "Everything", name: 0}  # api4ai's shape too
    message = await _refused(client, "/v1/jobs", body, auth)
    assert "unknown option" in message and name in message
    message = await _refused(client, "/v1/bulk", {"s3": {"bucket": USER_BUCKET}, name: 0}, auth)
    assert "unknown option" in message and name in message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"s3": {"bucket": USER_BUCKET, "prefix": "/claims/"}}, "s3.prefix"),
        ({"s3": {"bucket": USER_BUCKET, "prefix": "claims//x/"}}, "s3.prefix"),
        ({"s3": {"bucket": USER_BUCKET, "prefix": "./"}}, "s3.prefix"),
        ({"s3": {"bucket": USER_BUCKET, "prefix": "../veil-test/uploads/"}}, "s3.prefix"),
        ({"s3": {"bucket": USER_BUCKET, "prefix": "a\\b/"}}, "s3.prefix"),
        (
            {"s3": {"bucket": USER_BUCKET}, "output": {"bucket": OUTPUT_BUCKET, "prefix": "/x/"}},
            "output.prefix",
        ),
        (
            {"s3": {"bucket": USER_BUCKET}, "output": {"bucket": OUTPUT_BUCKET, "prefix": "x//"}},
            "output.prefix",
        ),
        (
            {
                "s3": {"bucket": USER_BUCKET},
                "output": {"bucket": OUTPUT_BUCKET, "prefix": "x/../../veil-test/"},
            },
            "output.prefix",
        ),
        # The blurred copies keep the keys' paths below the source folder: both prefixes name folders.
        ({"s3": {"bucket": USER_BUCKET, "prefix": "claims"}, "output": {"bucket": OUTPUT_BUCKET}}, "'/'"),
        ({"s3": {"bucket": USER_BUCKET}, "output": {"bucket": OUTPUT_BUCKET, "prefix": "blurred"}}, "'/'"),
        # Veil's own bucket, even where an operator listed it as readable / writable.
        ({"s3": {"bucket": "veil-test"}}, "Veil's own bucket"),
        ({"s3": {"bucket": "veil-test", "prefix": "uploads/"}}, "Veil's own bucket"),
        (
            {"s3": {"bucket": USER_BUCKET}, "output": {"bucket": "veil-test", "prefix": "uploads/"}},
            "Veil's own",
        ),
        # Writing into the folder being listed, however spelled.
        (
            {
                "s3": {"bucket": USER_BUCKET, "prefix": "c/"},
                "output": {"bucket": USER_BUCKET, "prefix": "./c/"},
            },
            "prefix",
        ),
        (
            {
                "s3": {"bucket": USER_BUCKET, "prefix": "c/"},
                "output": {"bucket": USER_BUCKET, "prefix": "c/"},
            },
            "originals",
        ),
        (
            {
                "s3": {"bucket": USER_BUCKET, "prefix": "c/"},
                "output": {"bucket": USER_BUCKET, "prefix": "c/b/"},
            },
            "originals",
        ),
        (
            {
                "s3": {"bucket": USER_BUCKET, "prefix": "c/b/"},
                "output": {"bucket": USER_BUCKET, "prefix": "c/"},
            },
            "originals",
        ),
    ],
)
async def test_bulk_prefixes_and_buckets(
    make_client: ClientFactory,
    settings: Settings,
    auth: dict[str, str],
    unique: str,
    body: dict[str, Any],
    needle: str,
) -> None:
    assert settings.s3.bucket == "veil-test"
    client = await make_client(
        with_changes(
            settings,
            s3={
                "readable_buckets": [USER_BUCKET, settings.s3.bucket],
                "writable_buckets": [OUTPUT_BUCKET, USER_BUCKET, settings.s3.bucket],
            },
            redis={"queue_name": f"queue-{unique}"},  # should one be accepted, no worker expands it
        )
    )
    message = await _refused(client, "/v1/bulk", body, auth)
    assert needle in message, message


async def test_bulk_folders_in_the_same_bucket_side_by_side_are_fine(
    make_client: ClientFactory, settings: Settings, auth: dict[str, str], unique: str
) -> None:
    client = await make_client(
        with_changes(
            settings,
            s3={"writable_buckets": [OUTPUT_BUCKET, USER_BUCKET]},
            redis={"queue_name": f"queue-{unique}"},  # no worker expands it: kept out of the shared queue
        )
    )
    body = {"s3": {"bucket": USER_BUCKET, "prefix": "c/"}, "output": {"bucket": USER_BUCKET, "prefix": "cb/"}}
    response = await client.post("/v1/bulk", json=body, headers=auth)
    assert response.status == 202, await response.json()
