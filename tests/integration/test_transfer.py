"""shared.transfer against the real SeaweedFS S3: the presigned path and the boto3 path behave alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.errors import NotFoundError, StoreUnavailableError
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer


@pytest.fixture(params=["presigned", "boto3"])
async def transfer(request: pytest.FixtureRequest, store: ObjectStore) -> AsyncIterator[ObjectTransfer]:
    opened = ObjectTransfer.open(store) if request.param == "presigned" else ObjectTransfer(store, None)
    yield opened
    await opened.close()


async def test_put_get_delete_round_trip(transfer: ObjectTransfer, store: ObjectStore, unique: str) -> None:
    key = f"uploads/transfer-{unique}"
    body = bytes(range(256)) * 1000
    await transfer.put(key, body, "image/png")
    got = await transfer.get(key)
    assert (got.body, got.content_type) == (body, "image/png")
    assert store.get(key).body == body  # what boto3 reads back: the same object
    await transfer.delete(key)
    assert not store.exists(key)
    await transfer.delete(key)  # already gone: not an error


async def test_missing_object_and_size_limit(transfer: ObjectTransfer, unique: str) -> None:
    with pytest.raises(NotFoundError):
        await transfer.get(f"uploads/never-{unique}")
    key = f"uploads/big-{unique}"
    await transfer.put(key, b"x" * 5000, "image/jpeg")
    with pytest.raises(ValueError, match="over the limit of 4000"):
        await transfer.get(key, max_bytes=4000)
    await transfer.delete(key)


async def test_other_bucket(transfer: ObjectTransfer, store: ObjectStore, unique: str) -> None:
    key = f"out/{unique}.jpg"
    await transfer.put(key, b"blurred", "image/jpeg", bucket="veil-user-output")
    assert store.get(key, bucket="veil-user-output").body == b"blurred"


async def test_unreachable_store_is_transient(settings: Settings) -> None:
    down = settings.s3.model_copy(update={"endpoint_url": "http://127.0.0.1:9"})  # discard port: refused
    transfer = ObjectTransfer.open(ObjectStore(down))
    try:
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            await transfer.put("uploads/x", b"data", "image/png")
        with pytest.raises(StoreUnavailableError):
            await transfer.get("uploads/x")
    finally:
        await transfer.close()


async def test_refused_credentials_are_a_store_error(settings: Settings, unique: str) -> None:
    wrong = settings.s3.model_copy(update={"secret_access_key": "not-the-secret"})
    transfer = ObjectTransfer.open(ObjectStore(wrong))
    try:
        with pytest.raises(StoreUnavailableError, match="refused the upload"):
            await transfer.put(f"uploads/denied-{unique}", b"data", "image/png")
    finally:
        await transfer.close()


def test_setting_turns_the_presigned_path_off(settings: Settings) -> None:
    off = settings.s3.model_copy(update={"presigned_transfers": False})
    assert ObjectTransfer.open(ObjectStore(off))._session is None
