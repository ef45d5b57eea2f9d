"""Plate Recognizer Blur facade without a worker: errors (400/403/413), SSRF guard on upload_url,
/info/, the on-premise listener, the timeout answer, and the forms the vendor's own clients send (an
integer ``split``, repeated fields, empty fields)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import FormData

from cli.embedded import free_port
from gateway.routes.platerecognizer import ACCEPTED_FIELDS
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


# -- what the vendor's own clients send ---------------------------------------------------------------------


def folder_client_body(image: bytes, **arguments: object) -> tuple[bytes, str]:
    """The body Plate Recognizer's folder-blurring client (``blur/main.py``) sends, encoded by ``requests``
    as that client does: its ``data`` dict holds every option (None when unset: left out; a list for the
    repeatable ``--xmin`` … and ``-r``; ints and floats as text) and its files are ``logo`` (None: left
    out) and ``upload``."""
    data: dict[str, object] = {
        "camera_id": None,
        "config": None,
        "et": 0.0,
        "el": 0.0,
        "eb": 0.0,
        "er": 0.0,
        "xmin": None,
        "ymin": None,
        "xmax": None,
        "ymax": None,
        "split": None,
        "overlap": None,
        "faces": 10,
        "plates": 10,
        "regions": None,
        **arguments,
    }
    files = {"logo": None, "upload": ("car.jpg", image)}
    prepared = requests.Request("POST", "http://veil.invalid/v1/blur", files=files, data=data).prepare()
    assert isinstance(prepared.body, bytes)
    return prepared.body, prepared.headers["Content-Type"]


async def queued_options(
    client: GatewayClient, api_key: tuple[str, str], body: bytes | FormData, content_type: str | None = None
) -> dict[str, Any]:
    """Send a blur request that cannot finish (no worker; the facade gives up at once): the options of
    the job it queued."""
    headers = token(api_key) | ({"Content-Type": content_type} if content_type else {})
    response = await client.post("/v1/blur", data=body, headers=headers)
    message = await error(response, 503)
    job_id = (await response.json())["job_id"]
    assert job_id in message
    polled = await client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": api_key[0]})
    options: dict[str, Any] = (await polled.json())["options"]
    return options


@pytest.mark.parametrize(
    ("split", "chunks"),
    [(3, 3), (2, 2), (16, 16), (1, None), (0, None), ("true", "default"), ("false", None)],
)
async def test_folder_client_split_as_a_number_of_chunks(
    make_client: ClientFactory,
    settings: Settings,
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
    split: object,
    chunks: object,
) -> None:
    client = await make_client(quick(settings))
    body, content_type = folder_client_body(astronaut_jpeg, split=split, overlap=30)
    options = await queued_options(client, api_key, body, content_type)
    assert options["split"] is (chunks is not None)
    assert options.get("split_chunks") == (chunks if isinstance(chunks, int) else None)
    assert options["split_overlap"] == 30
    assert (options["face_strength"], options["plate_strength"]) == (10, 10)


async def test_folder_client_repeated_fields(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    client = await make_client(quick(settings))
    body, content_type = folder_client_body(
        astronaut_jpeg,
        xmin=[10, 300],
        ymin=[20, 320],
        xmax=[50, 400],
        ymax=[60, 420],
        regions=["us-ca", "th-37"],
        skip_regexp=["ab123", "xy.*"],
        et=5.0,
        config='{"region": "strict"}',
        camera_id="gate-2",
        copy_metadata="true",
    )
    options = await queued_options(client, api_key, body, content_type)
    assert options["exclusion"] == {
        "top": 5.0,
        "left": 0.0,
        "bottom": 0.0,
        "right": 0.0,
        "box": [10, 20, 50, 60],
        "more_boxes": [[300, 320, 400, 420]],
    }
    assert options["skip_regexp"] == ["ab123", "xy.*"]
    assert options["keep_metadata"] is True


async def test_empty_fields_are_unset(
    make_client: ClientFactory, settings: Settings, api_key: tuple[str, str], astronaut_jpeg: bytes
) -> None:
    """A web form sends every field it has, empty when the user left it: each means "not given"."""
    client = await make_client(quick(settings))
    form = upload_form(astronaut_jpeg)
    for name in sorted(ACCEPTED_FIELDS - {"upload"}):
        form.add_field(name, "")
    form.add_field("plates", "10")  # a repeated field: the last value counts
    form.add_field("plates", "7")
    options = await queued_options(client, api_key, form)
    assert (options["face_strength"], options["plate_strength"]) == (0, 7)
    assert options["exclusion"] is None and options["split"] is False and "split_chunks" not in options
    assert options["split_overlap"] == 20 and options["face_max_side"] is None
    assert options["logo_key"] is None and "skip_regexp" not in options


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"split": "17"}, "split must be true, false or a whole number of chunks from 0 to 16"),
        ({"split": "-1"}, "split must be"),
        ({"split": "2.5"}, "split must be"),
        ({"xmin": ["1", "5"], "ymin": ["1", "5"], "xmax": ["9", "9"], "ymax": ["9"]}, "missing ymax"),
        ({"xmin": ["1", "9"], "ymin": ["1", "1"], "xmax": ["9", "5"], "ymax": ["9", "9"]}, "xmin < xmax"),
    ],
)
async def test_400_bad_vendor_forms(
    client: GatewayClient,
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
    fields: dict[str, Any],
    needle: str,
) -> None:
    form = upload_form(astronaut_jpeg, faces="10")
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            form.add_field(name, value)
    response = await client.post("/v1/blur", data=form, headers=token(api_key))
    assert needle in await error(response, 400)
