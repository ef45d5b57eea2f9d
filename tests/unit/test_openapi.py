"""The OpenAPI document: valid OpenAPI 3.1, one operation per route the gateway serves, generated from the
models (the blur options appear without a second edit), facades under their own tags with their own error
schemas, a security scheme per auth style; and /docs works offline."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from gateway import api4ai
from gateway.app import create_app
from gateway.openapi import build_document, document
from gateway.options import OPTION_NAMES
from gateway.routes import docs, plateblurer, platerecognizer, vehicore
from gateway.routes.bulk import BulkFields
from gateway.routes.deliveries import Deliveries, DeliveriesLinks, RedeliveryAccepted, RedeliveryLinks
from gateway.routes.platerecognizer import ACCEPTED_FIELDS
from shared.bulk import BulkRecord, BulkSource, BulkStatus, summary
from shared.bulk_progress import Counters
from shared.deliveries import DeliveryAttempt, DeliveryOutcome
from shared.jobs import (
    BlurOptions,
    Detection,
    Exclusion,
    ImageFormat,
    InputInfo,
    JobError,
    JobRecord,
    JobStatus,
    ResultInfo,
)
from shared.settings import load_settings

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
Document = dict[str, Any]


@pytest.fixture(scope="module")
def doc() -> Document:
    parsed: Document = orjson.loads(document())
    return parsed


def operations(doc: Document) -> dict[tuple[str, str], Document]:
    return {
        (path, method): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def schema(doc: Document, ref: Document) -> Document:
    name = ref["$ref"].removeprefix("#/components/schemas/")
    found: Document = doc["components"]["schemas"][name]
    return found


def test_the_document_is_valid_openapi_3_1(doc: Document) -> None:
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # openapi-spec-validator: raises on any error
    assert document() is document()  # built once
    assert orjson.loads(document()) == build_document()  # and the same every time


def test_every_route_is_documented_and_nothing_else() -> None:
    app = create_app(load_settings())
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not isinstance(route.resource, web.StaticResource)  # /docs/static/*: Swagger UI's files
    }
    documented = set(operations(orjson.loads(document())))
    assert served == documented
    static = [r.resource.canonical for r in app.router.routes() if isinstance(r.resource, web.StaticResource)]
    assert static and all(path.startswith("/docs/") for path in static)


def test_blur_options_appear_in_every_body_that_takes_them(doc: Document) -> None:
    schemas = doc["components"]["schemas"]
    own = {
        "image",
        "video",
        "image_base64",
        "image_url",
        "s3",
        "callback_url",
        "objects_to_hide",
        "output",
        "wait",
    }
    for name in ("JobSubmission", "JobSubmissionForm", "JobSubmissionUrlencoded"):
        properties = set(schemas[name]["properties"])
        assert properties - own == set(OPTION_NAMES), name
        assert schemas[name]["additionalProperties"] is False
    assert set(schemas["BulkRequest"]["properties"]) == set(OPTION_NAMES) | set(BulkFields.model_fields)
    # the internal options (set by facades) are never offered to clients
    assert {"logo_key", "face_strength", "plate_strength"}.isdisjoint(
        schemas["JobSubmissionForm"]["properties"]
    )
    assert set(OPTION_NAMES) < set(BlurOptions.model_fields)
    # a form takes text: targets comma-separated, one skip pattern, an exclusion as JSON text
    form = schemas["JobSubmissionForm"]["properties"]
    assert form["targets"]["type"] == "string" and re.fullmatch(form["targets"]["pattern"], "Faces, plates")
    assert not re.fullmatch(form["targets"]["pattern"], "cars")
    assert form["skip_regexp"]["type"] == "string"
    assert form["exclusion"]["contentMediaType"] == "application/json"
    assert form["image"]["format"] == "binary"
    assert schemas["JobSubmissionForm"]["oneOf"] == [
        {"required": ["image"]},
        {"required": ["video"]},
        {"required": ["image_base64"]},
        {"required": ["image_url"]},
    ]
    json_body = schemas["JobSubmission"]["properties"]
    assert {"type": "null"} in json_body["padding"]["anyOf"]  # null: the default
    assert json_body["padding"]["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 1}


def test_the_job_json_is_the_contract_minus_private_fields(doc: Document) -> None:
    schemas = doc["components"]["schemas"]
    public = set(JobRecord.model_fields) - {"owner", "attempts"}
    assert set(schemas["Job"]["properties"]) == public | {"links"}
    assert set(schemas["Job"]["required"]) == public | {"links"}
    view = schemas["JobView"]
    assert set(view["properties"]) == public | {"links", "objects", "format", "width", "height"}
    assert "objects" not in view["required"]
    assert "key" not in schemas["PublicResult"]["properties"]
    assert "base64" in schemas["ViewResult"]["properties"]


def test_webhooks_carry_the_payload_and_signature_headers(doc: Document) -> None:
    hook = doc["webhooks"]["jobFinished"]["post"]
    headers = {parameter["name"] for parameter in hook["parameters"] if parameter["in"] == "header"}
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
    payload = schema(doc, hook["requestBody"]["content"]["application/json"]["schema"])
    assert payload["properties"]["event"]["enum"] == ["job.succeeded", "job.failed"]
    assert payload["properties"]["job"] == {"$ref": "#/components/schemas/Job"}
    bulk_hook = doc["webhooks"]["bulkFinished"]["post"]
    assert {p["name"] for p in bulk_hook["parameters"] if p["in"] == "header"} == headers
    bulk_payload = schema(doc, bulk_hook["requestBody"]["content"]["application/json"]["schema"])
    assert bulk_payload["properties"]["event"]["const"] == "bulk.finished"
    assert bulk_payload["properties"]["bulk"] == {"$ref": "#/components/schemas/BulkSummary"}
    assert "410" in hook["responses"] and "410" in bulk_hook["responses"]


def test_security_schemes_for_each_auth_style(doc: Document) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A Veil API key.",
    }
    assert schemes["Bearer"]["scheme"] == "bearer" and schemes["Basic"]["scheme"] == "basic"
    assert schemes["PlateRecognizerToken"]["name"] == "Authorization"
    ops = operations(doc)
    assert ops[("/v1/jobs", "post")]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert ops[("/v1/blur", "post")]["security"] == [{"PlateRecognizerToken": []}]
    assert ops[("/plateblurer.aspx", "post")]["security"] == [{"Basic": []}]
    assert ops[("/api/anonymize/all", "post")]["security"] == [{"ApiKey": []}]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/info/"):
        assert ops[(path, "get")]["security"] == [], path


@pytest.mark.parametrize(
    ("tag", "error_schema", "paths"),
    [
        ("VehiCore", "VehiCoreError", ["/api/anonymize", "/api/anonymize/face", "/api/anonymize/all"]),
        ("Plate Recognizer", "PlateRecognizerError", ["/v1/blur"]),
        ("PlateBlurer", "PlateBlurerErrors", ["/plateblurer", "/plateblurer.aspx"]),
        ("Jobs", "NativeError", ["/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"]),
    ],
)
def test_each_facade_has_its_tag_and_its_error_schema(
    doc: Document, tag: str, error_schema: str, paths: list[str]
) -> None:
    assert tag in {entry["name"] for entry in doc["tags"]}
    for (path, _), operation in operations(doc).items():
        if path not in paths:
            continue
        assert tag in operation["tags"], path
        errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
        assert errors, path
        for response in errors.values():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{error_schema}", path
            assert response["headers"]["X-Request-ID"]


def test_api4ai_wait_in_a_form() -> None:
    assert api4ai.parse_wait("false", 30) == 0 and api4ai.parse_wait("True", 30) == 30
    assert api4ai.parse_wait("12", 30) == 12


def test_plate_recognizer_forms_describe_what_its_clients_send(doc: Document) -> None:
    form = doc["components"]["schemas"]["PlateRecognizerForm"]
    assert set(form["properties"]) == ACCEPTED_FIELDS
    split = form["properties"]["split"]["anyOf"]
    assert {"type": "boolean"} in split and {"const": "", "type": "string"} in split
    assert {"type": "integer", "minimum": 0, "maximum": 16} in split
    assert form["properties"]["xmin"]["type"] == "array"  # one per excluded box
    assert form["properties"]["skip_regexp"]["type"] == "array"
    urlencoded = doc["components"]["schemas"]["PlateRecognizerUrlencoded"]
    assert "upload" not in urlencoded["properties"] and urlencoded["required"] == ["upload_url"]


# -- /docs ---------------------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.fixture
async def docs_client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.add_routes(docs.routes)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_docs_page_loads_only_local_assets(
    docs_client: TestClient[web.Request, web.Application],
) -> None:
    response = await docs_client.get("/docs")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    assert "http:" not in page and "https:" not in page and "//" not in page
    parser = _Links()
    parser.feed(page)
    assert len(parser.urls) == 3
    for url in parser.urls:
        assert url.startswith("/docs/static/"), url
        asset = await docs_client.get(url)
        assert asset.status == 200, url
        assert len(await asset.read()) > 100
    assert '"/openapi.json"' in page and 'validatorUrl: "none"' in page
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self' 'sha256-" in policy
    served = await docs_client.get("/openapi.json")
    assert served.content_type == "application/json"
    validate(await served.json())
    assert (await docs_client.get("/docs/static/../../__init__.py")).status == 404


# -- bodies built by the code match the document -----------------------------------------------------------


def _validator(doc: Document, name: str) -> OAS31Validator:
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)


def _succeeded() -> JobRecord:
    face = Detection.model_validate(
        {"class": "face", "score": 0.9, "box": [10, 20, 60, 90], "sources": ["centerface"]}
    )
    plate = Detection.model_validate(
        {
            "class": "plate",
            "score": 0.8,
            "box": [100, 200, 180, 230],
            "polygon": [[100, 200], [180, 200], [180, 230], [100, 230]],
            "text": "AB-12",
            "text_score": 0.7,
        }
    )
    now = datetime.now(UTC)
    return JobRecord(
        id="a" * 32,
        owner="k",
        status=JobStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
        input=InputInfo(width=640, height=480, format=ImageFormat.JPEG),
        options=BlurOptions(
            split=True,
            split_chunks=3,
            skip_regexp=("ab12",),
            exclusion=Exclusion(top=5, more_boxes=((1, 2, 3, 4),)),
        ),
        detections=[face, plate],
        blurred_regions=[[5, 10, 65, 100]],
        result=ResultInfo(url="http://s3/x", expires_at=now, content_type="image/jpeg", key="results/x.jpg"),
        timings_ms={"detect": 12.5},
    )


def test_built_bodies_match_their_schemas(doc: Document) -> None:
    record = _succeeded()
    view: dict[str, Any] = {**record.public(), **api4ai.view(record)}
    view["result"]["base64"] = "aGk="
    _validator(doc, "JobView").validate(orjson.loads(orjson.dumps(view)))
    failed = record.model_copy(
        update={"status": JobStatus.FAILED, "result": None, "error": JobError(code="X", message="m")}
    )
    _validator(doc, "JobView").validate(orjson.loads(orjson.dumps(failed.public())))
    _validator(doc, "WebhookEvent").validate({"event": "job.succeeded", "job": record.public()})
    blur = platerecognizer.blur_response(record, b"img", "car.jpg", None)
    _validator(doc, "PlateRecognizerBlur").validate(blur)
    _validator(doc, "VehiCoreMetadata").validate(vehicore.metadata(record, "all"))
    prediction = plateblurer.prediction(record.detections[1], 640, 480, "")
    answer = {"created": "2020-05-02T12:28:09.989Z", "predictions": [prediction], "final_photo": "aGk="}
    _validator(doc, "PlateBlurerAnswer").validate(answer)
    assert list(_validator(doc, "JobView").iter_errors({**view, "status": "lost"}))


def test_bulk_and_delivery_bodies_match_their_schemas(doc: Document) -> None:
    now = datetime.now(UTC)
    record = BulkRecord(
        id="b" * 32,
        owner="k",
        status=BulkStatus.RUNNING,
        source=BulkSource(bucket="claims", prefix="2026/"),
        callback_url="https://hooks.example/veil",
        total=3,
    )
    stamp = int(now.timestamp() * 1000)
    for counters in (
        Counters(),  # nothing ended yet: no rate, no ETA
        Counters(succeeded=1, failed=1, running=1, first_started_ms=stamp - 2000),
        Counters(
            succeeded=1,
            failed=1,
            cancelled=1,
            first_started_ms=stamp - 2000,
            cancelled_ms=stamp,
            finished_ms=stamp,
        ),
    ):
        body = orjson.loads(orjson.dumps(summary(record, counters)))
        _validator(doc, "BulkSummary").validate(body)
        _validator(doc, "BulkFinishedEvent").validate({"event": "bulk.finished", "bulk": body})
        child = {
            "id": "c" * 32,
            "key": "2026/a.jpg",
            "status": "failed",
            "result": None,
            "error": {"code": "CANCELLED", "message": "m"},
        }
        _validator(doc, "BulkView").validate({**body, "jobs": [child], "links": {"self": "/v1/bulk/b"}})
    assert body["status"] == "cancelled" and body["progress"]["eta_seconds"] == 0
    attempt = DeliveryAttempt(
        redelivery=0,
        attempt=1,
        at=now,
        event="job.succeeded",
        webhook_id="msg_x_job_succeeded",
        url="https://hooks.example/veil",
        status=None,
        latency_ms=None,
        error="timed out after 10 s",
        outcome=DeliveryOutcome.RETRYING,
        next_attempt_at=now,
    )
    listed = Deliveries(deliveries=[attempt], links=DeliveriesLinks(self_="/v1/jobs/x/deliveries"))
    _validator(doc, "Deliveries").validate(
        orjson.loads(orjson.dumps(listed.model_dump(mode="json", by_alias=True)))
    )
    accepted = RedeliveryAccepted(
        redelivery=1, status="queued", links=RedeliveryLinks(deliveries="/v1/jobs/x/d")
    )
    _validator(doc, "RedeliveryAccepted").validate(accepted.model_dump())
