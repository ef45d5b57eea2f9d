"""Live answers of the gateway (real Redis and SeaweedFS, no worker) checked against /openapi.json: each
response's status and content type are documented for its path and method, and its body matches the
documented schema (JSON Schema 2020-12, the OpenAPI 3.1 dialect)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import ClientResponse, FormData
from openapi_schema_validator import OAS31Validator

from shared.settings import Settings
from tests.integration.conftest import ClientFactory, GatewayClient

pytestmark = pytest.mark.integration

Document = dict[str, Any]


async def documented(doc: Document, response: ClientResponse, path: str) -> Any:
    """The response's body, after checking it against the document's schema for ``path``."""
    operation = doc["paths"][path][response.method.lower()]
    described = operation["responses"].get(str(response.status))
    assert described is not None, f"{response.method} {path}: {response.status} is not documented"
    assert "X-Request-ID" in described["headers"] and response.headers["X-Request-ID"]
    if "content" not in described:
        assert not await response.read()
        return None
    media = response.content_type
    assert media in described["content"], f"{response.method} {path} {response.status}: {media}"
    if media != "application/json":
        return await response.read()
    body = await response.json()
    schema = {**described["content"][media]["schema"], "components": doc["components"]}
    OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER).validate(body)
    return body


@pytest.fixture
async def doc(client: GatewayClient) -> Document:
    response = await client.get("/openapi.json")
    assert response.status == 200
    body: Document = await response.json()
    return body


def quick(settings: Settings) -> Settings:
    """Facades give up waiting at once (no worker runs here): their 503 answer, with the job id."""
    return settings.model_copy(
        update={"gateway": settings.gateway.model_copy(update={"facade_timeout_seconds": 0.1})}
    )


async def test_native_jobs(
    client: GatewayClient,
    doc: Document,
    auth: dict[str, str],
    other_auth: dict[str, str],
    astronaut_jpeg: bytes,
) -> None:
    form = FormData()
    form.add_field("image", astronaut_jpeg, filename="a.jpg", content_type="image/jpeg")
    form.add_field("targets", "faces")
    form.add_field("exclusion", '{"top": 10, "box": [0, 0, 20, 20]}')  # an object option: JSON text in forms
    created = await documented(doc, await client.post("/v1/jobs", data=form, headers=auth), "/v1/jobs")
    job = f"/v1/jobs/{created['id']}"
    body = await documented(doc, await client.get(job, headers=auth), "/v1/jobs/{job_id}")
    assert body["status"] == "queued" and body["options"]["targets"] == ["faces"]
    assert body["options"]["exclusion"] == {
        "top": 10,
        "left": 0,
        "bottom": 0,
        "right": 0,
        "box": [0, 0, 20, 20],
    }
    result = await client.get(f"{job}/result", headers=auth, allow_redirects=False)
    assert (await documented(doc, result, "/v1/jobs/{job_id}/result"))["code"] == "NOT_FINISHED"
    deleted = await client.delete(job, headers=auth)
    assert (await documented(doc, deleted, "/v1/jobs/{job_id}"))["code"] == "NOT_FINISHED"
    missing = await client.get(job, headers=other_auth)  # another key's job
    assert (await documented(doc, missing, "/v1/jobs/{job_id}"))["code"] == "NOT_FOUND"
    anonymous = await client.post("/v1/jobs", json={"image_url": "https://example.org/a.jpg"})
    assert (await documented(doc, anonymous, "/v1/jobs"))["code"] == "UNAUTHORIZED"
    encoded = base64.b64encode(astronaut_jpeg).decode()
    bad = await client.post("/v1/jobs", json={"image_base64": encoded, "blur": 500}, headers=auth)
    assert "blur" in (await documented(doc, bad, "/v1/jobs"))["message"]
    as_json = await client.post(
        "/v1/jobs", json={"image_base64": encoded, "exclusion": {"top": 10}, "split": None}, headers=auth
    )
    assert as_json.status == 202
    await documented(doc, as_json, "/v1/jobs")
    form = FormData()
    form.add_field("image", astronaut_jpeg, filename="a.jpg", content_type="image/jpeg")
    form.add_field("exclusion", "{top")
    bad_json = await client.post("/v1/jobs", data=form, headers=auth)
    assert "exclusion" in (await documented(doc, bad_json, "/v1/jobs"))["message"]
    not_image = await client.post("/v1/jobs", json={"image": [1, 2, 3]}, headers=auth)
    assert not_image.status in (400, 415)
    await documented(doc, not_image, "/v1/jobs")


async def test_bulk_health_and_docs(client: GatewayClient, doc: Document, auth: dict[str, str]) -> None:
    request = {"s3": {"bucket": "veil-user-bucket", "prefix": "openapi/"}, "targets": "plates", "limit": 5}
    created = await documented(doc, await client.post("/v1/bulk", json=request, headers=auth), "/v1/bulk")
    page = await client.get(f"/v1/bulk/{created['id']}?limit=10", headers=auth)
    assert (await documented(doc, page, "/v1/bulk/{bulk_id}"))["jobs"] == []
    refused = await client.post("/v1/bulk", json={"s3": {"bucket": "veil-test"}}, headers=auth)
    assert (await documented(doc, refused, "/v1/bulk"))["code"] == "VALIDATION_ERROR"
    assert (await documented(doc, await client.get("/healthz"), "/healthz")) == {"status": "ok"}
    readiness = await documented(doc, await client.get("/readyz"), "/readyz")
    assert readiness["checks"]["redis"]["ok"] is True
    assert b"veil_http_requests_total" in await documented(doc, await client.get("/metrics"), "/metrics")
    assert b"swagger-ui" in await documented(doc, await client.get("/docs"), "/docs")


async def test_facades(
    make_client: ClientFactory,
    settings: Settings,
    api_key: tuple[str, str],
    astronaut_jpeg: bytes,
) -> None:
    client = await make_client(quick(settings))
    doc = await (await client.get("/openapi.json")).json()
    token = {"Authorization": f"Token {api_key[0]}"}
    form = FormData()
    form.add_field("upload", astronaut_jpeg, filename="car.jpg", content_type="image/jpeg")
    form.add_field("plates", "10")
    timed_out = await documented(doc, await client.post("/v1/blur", data=form, headers=token), "/v1/blur")
    assert timed_out["job_id"]
    forbidden = await client.post("/v1/blur", data={"upload_url": "https://example.org/a.jpg"})
    assert (await documented(doc, forbidden, "/v1/blur"))["error"]
    bad = await client.post(
        "/v1/blur", data={"upload_url": "https://example.org/a.jpg", "faces": "11"}, headers=token
    )
    assert "faces" in (await documented(doc, bad, "/v1/blur"))["error"]
    assert (await documented(doc, await client.get("/info/"), "/info/"))["snapshot"] is None

    image = FormData()
    image.add_field("image", astronaut_jpeg, filename="car.jpg", content_type="image/jpeg")
    unauthorized = await client.post("/api/anonymize/all?response=json", data=image)
    assert (await documented(doc, unauthorized, "/api/anonymize/all"))["code"] == "UNAUTHORIZED"
    image = FormData()
    image.add_field("image", astronaut_jpeg, filename="car.jpg", content_type="image/jpeg")
    slow = await client.post("/api/anonymize?response=json", data=image, headers={"X-API-Key": api_key[0]})
    assert (await documented(doc, slow, "/api/anonymize"))["job_id"]

    basic = {"Authorization": "Basic " + base64.b64encode(f"any:{api_key[0]}".encode()).decode()}
    nothing = await client.post("/plateblurer.aspx", json={"photo_url": "NO"}, headers=basic)
    assert (await documented(doc, nothing, "/plateblurer.aspx"))[0]["cd"] == "1013"
    nobody = await client.post("/plateblurer", json={"photo_url": "NO"})
    assert (await documented(doc, nobody, "/plateblurer"))[0]["cd"] == "1001"
