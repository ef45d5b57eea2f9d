"""shared.transfer and the store's presigned GETs against the real SeaweedFS S3."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
import pytest

from shared.errors import NotFoundError, PayloadTooLargeError, StoreUnavailableError
from shared.settings import Settings
from shared.storage import ObjectStore
from shared.transfer import ObjectTransfer


@pytest.fixture
async def transfer(store: ObjectStore) -> AsyncIterator[ObjectTransfer]:
    opened = ObjectTransfer.open(store)
    yield opened
    await opened.close()


async def test_put_get_delete_round_trip(transfer: ObjectTransfer, store: ObjectStore, unique: str) -> None:
    key = f"uploads/transfer-{unique}"
    body = bytes(range(256)) * 1000
    await transfer.put(key, body, "image/png")
    got = await transfer.get(key)
    assert (got.body, got.content_type) == (body, "image/png")
    assert store.get(key).body == body  # the blocking client reads back the same object
    await transfer.delete(key)
    assert not store.exists(key)
    await transfer.delete(key)  # already gone: not an error


async def test_missing_object_and_size_limit(
    transfer: ObjectTransfer, store: ObjectStore, unique: str
) -> None:
    with pytest.raises(NotFoundError):
        await transfer.get(f"uploads/never-{unique}")
    key = f"uploads/big-{unique}"
    await transfer.put(key, b"x" * 5000, "image/jpeg")
    with pytest.raises(PayloadTooLargeError, match="5000 bytes, over the limit of 4000"):
        await transfer.get(key, max_bytes=4000)
    with pytest.raises(PayloadTooLargeError):
        store.get(key, max_bytes=4999)
    assert (await transfer.get(key, max_bytes=5000)).body == b"x" * 5000
    await transfer.delete(key)


async def test_other_bucket(transfer: ObjectTransfer, store: ObjectStore, unique: str) -> None:
    key = f"out/{unique}.jpg"
    await transfer.put(key, b"blurred", "image/jpeg", bucket="veil-user-output")
    assert store.get(key, bucket="veil-user-output").body == b"blurred"
    await transfer.delete(key, bucket="veil-user-output")


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
        with pytest.raises(StoreUnavailableError, match="object store error"):
            await transfer.put(f"uploads/denied-{unique}", b"data", "image/png")
    finally:
        await transfer.close()


async def test_presigned_get_is_on_the_public_endpoint_and_works(
    settings: Settings, store: ObjectStore, unique: str
) -> None:
    # The same server under another name stands for the host clients reach: the URL names it, is signed
    # for it, and serves the object there.
    internal = urllib.parse.urlsplit(settings.s3.endpoint_url or "")
    public_endpoint = f"http://localhost:{internal.port}"
    public = ObjectStore(settings.s3.model_copy(update={"public_endpoint_url": public_endpoint}))
    key = f"results/{unique}.png"
    store.put(key, b"blurred bytes", "image/png")
    try:
        url = public.presign_get(key, 3600)
        parts = urllib.parse.urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == public_endpoint
        assert parts.path == f"/{settings.s3.bucket}/{key}"
        query = urllib.parse.parse_qs(parts.query)
        assert query["X-Amz-Expires"] == ["3600"]
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 200
                assert await response.read() == b"blurred bytes"
                assert response.headers["Content-Type"] == "image/png"
            tampered = url.replace(f"/{unique}.png", f"/{unique}-other.png")
            async with http.get(tampered) as response:
                assert response.status == 403  # the signature covers the key
        # Without a public endpoint, clients get the internal one.
        assert store.presign_get(key, 60).startswith(f"{settings.s3.endpoint_url}/{settings.s3.bucket}/")
    finally:
        store.delete(key)


def test_presigned_transfers_setting_is_accepted_and_ignored(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Deprecated for one release: a deployment that still sets it starts, with a warning.
    with caplog.at_level(logging.WARNING, logger="shared.storage"):
        ObjectStore(settings.s3.model_copy(update={"presigned_transfers": False}))
    assert "VEIL_S3__PRESIGNED_TRANSFERS is ignored" in caplog.text
