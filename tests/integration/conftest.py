"""Gateway fixtures: the real app (``create_app``) on aiohttp's test server, against the session's real
Redis and SeaweedFS, and API keys created in that Redis."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from redis.asyncio import Redis
from skimage import data

from gateway.app import create_app
from shared.apikeys import ApiKeyStore
from shared.settings import Settings

GatewayClient = TestClient[web.Request, web.Application]
ClientFactory = Callable[[Settings], Awaitable[GatewayClient]]


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    """A real 512x512 photo with a face, as JPEG."""
    pixels = data.astronaut()  # type: ignore[no-untyped-call]
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


@pytest.fixture(scope="session")
def camera_png() -> bytes:
    """A real 512x512 greyscale photo, as PNG."""
    pixels = data.camera()  # type: ignore[no-untyped-call]
    return encode(Image.fromarray(pixels), "PNG")


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Start the gateway for the given settings; every client is closed at teardown."""
    clients: list[GatewayClient] = []

    async def start(settings: Settings) -> GatewayClient:
        client: GatewayClient = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory, settings: Settings) -> GatewayClient:
    return await make_client(settings)


async def _new_key(settings: Settings, name: str) -> tuple[str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        token, key = await ApiKeyStore(redis, settings.redis.prefix).create(name)
    finally:
        await redis.aclose()
    return token, key.id


@pytest.fixture
async def api_key(settings: Settings) -> tuple[str, str]:
    """(token, key id) of a fresh API key."""
    return await _new_key(settings, "integration")


@pytest.fixture
def auth(api_key: tuple[str, str]) -> dict[str, str]:
    return {"X-API-Key": api_key[0]}


@pytest.fixture
async def other_auth(settings: Settings) -> dict[str, str]:
    token, _ = await _new_key(settings, "someone else")
    return {"X-API-Key": token}
