"""Request ids: every response carries X-Request-ID (the client's own when sane), and the log lines
written while the request is handled, the access log line included, carry it as ``request_id``."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from gateway.requestid import REQUEST_ID_HEADER, choose_request_id
from shared.logging import JsonFormatter
from tests.integration.conftest import GatewayClient
from tests.integration.test_gateway_jobs import multipart

pytestmark = pytest.mark.integration

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_client_ids_are_kept_only_when_sane() -> None:
    assert choose_request_id("req-42.a:b_C") == "req-42.a:b_C"
    for bad in (None, "", "has space", "x" * 129, "new\nline", "ü"):
        assert GENERATED.fullmatch(choose_request_id(bad))


async def test_every_response_carries_an_id(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes
) -> None:
    created = await client.post("/v1/jobs", data=multipart(astronaut_jpeg), headers=auth)
    assert created.status == 202
    assert GENERATED.fullmatch(created.headers[REQUEST_ID_HEADER])

    unauthorized = await client.get("/v1/jobs/" + "0" * 32)
    assert unauthorized.status == 401
    assert GENERATED.fullmatch(unauthorized.headers[REQUEST_ID_HEADER])

    missing = await client.get("/no/such/route", headers={REQUEST_ID_HEADER: "trace-7"})
    assert missing.status == 404
    assert missing.headers[REQUEST_ID_HEADER] == "trace-7"

    spoofed = await client.get("/healthz", headers={REQUEST_ID_HEADER: "a b"})
    assert GENERATED.fullmatch(spoofed.headers[REQUEST_ID_HEADER])


async def test_log_lines_carry_the_requests_id(
    client: GatewayClient, auth: dict[str, str], astronaut_jpeg: bytes, json_log: io.StringIO
) -> None:
    response = await client.post(
        "/v1/jobs", data=multipart(astronaut_jpeg), headers={**auth, REQUEST_ID_HEADER: "upload-1"}
    )
    assert response.status == 202
    job_id = (await response.json())["id"]
    lines = [orjson.loads(line) for line in json_log.getvalue().splitlines()]
    queued = [line for line in lines if job_id in line["msg"] and "queued" in line["msg"]]
    assert queued and all(line["request_id"] == "upload-1" for line in queued)
    access = [line for line in lines if line["logger"] == "aiohttp.access" and "POST /v1/jobs" in line["msg"]]
    assert access and access[-1]["request_id"] == "upload-1"
