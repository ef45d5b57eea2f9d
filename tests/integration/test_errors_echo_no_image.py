"""Error answers never echo the image they refuse (docs/privacy.md): broken, truncated, unsupported and
badly encoded images sent through the native API and every facade get a 4xx whose body holds no piece of
the bytes sent (raw, base64, hex or as byte values). The worker's own decode failures are one fixed text
(workers/imageops.py), so only the gateway's answers are checked here."""

from __future__ import annotations

import base64

import aiohttp
import pytest

from tests.integration.conftest import GatewayClient
from tests.integration.test_no_image_bytes_in_redis_or_logs import fingerprints, noise_png

pytestmark = pytest.mark.integration


def _broken_images() -> dict[str, bytes]:
    png = noise_png(11)
    corrupt = bytearray(png)
    corrupt[33:37] = b"\x7f\xff\xff\xff"  # the first chunk after IHDR claims 2 GB
    return {
        "truncated png": png[: len(png) // 2 + 200],
        "corrupt png": bytes(corrupt),
        "not an image": noise_png(12)[60:],
        "jpeg header then noise": b"\xff\xd8\xff\xe0" + noise_png(13)[8:],
    }


BROKEN = _broken_images()


def _no_echo(answer: bytes, sent: bytes) -> None:
    assert not any(fp in answer for fp in fingerprints(sent)), answer[:300]


@pytest.mark.parametrize("name", sorted(BROKEN))
async def test_refused_images_are_not_echoed(client: GatewayClient, auth: dict[str, str], name: str) -> None:
    image = BROKEN[name]
    token = auth["X-API-Key"]
    answers: list[tuple[int, bytes]] = []

    async def post(path: str, **kwargs: object) -> None:
        response = await client.post(path, **kwargs)  # type: ignore[arg-type]
        answers.append((response.status, await response.read()))

    form = aiohttp.FormData()
    form.add_field("image", image, filename="x.png", content_type="image/png")
    await post("/v1/jobs", data=form, headers=auth)
    await post("/v1/jobs", json={"image_base64": base64.b64encode(image).decode()}, headers=auth)
    await post("/v1/jobs", json={"image": list(image)}, headers=auth)
    form = aiohttp.FormData()
    form.add_field("image", image, filename="x.png", content_type="image/png")
    await post("/api/anonymize/all", data=form, headers={"X-API-Key": token})
    form = aiohttp.FormData()
    form.add_field("upload", noise_png(14), filename="ok.png", content_type="image/png")
    form.add_field("logo", image, filename="logo.png", content_type="image/png")  # a broken logo
    form.add_field("plates", "5")
    await post("/v1/blur", data=form, headers={"Authorization": f"Token {token}"})
    basic = base64.b64encode(f"any:{token}".encode()).decode()
    body = {"base64_Photo_String": base64.b64encode(image).decode()}
    await post("/plateblurer", json=body, headers={"Authorization": f"Basic {basic}"})
    # Not base64 at all: a base64 text with a stray character in the middle.
    text = base64.b64encode(image).decode()
    await post("/v1/jobs", json={"image_base64": text[:100] + "!" + text[100:]}, headers=auth)

    for status, answer in answers:
        assert 400 <= status < 500, (status, answer[:300])
        _no_echo(answer, image)
