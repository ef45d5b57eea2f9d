"""The native API's paths (jobs, results, bulk), the webhook it sends, and the unauthenticated routes
(health, metrics, this document, the docs page and the web demo)."""

from __future__ import annotations

from gateway.openapi.components import (
    RETRY_AFTER,
    Components,
    Schema,
    error_responses,
    json_body,
)
from gateway.openapi.models import (
    BulkFinishedEvent,
    BulkRequest,
    JobForm,
    JobJson,
    JobUrlencoded,
    JobView,
    NativeError,
    WebhookEvent,
)
from gateway.routes import bulk, deliveries, demo, health, jobs
from shared.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    ID_HEADER,
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

NATIVE_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
PUBLIC: list[dict[str, list[str]]] = []  # no authentication

_ERRORS = {
    400: "`VALIDATION_ERROR` (bad input or option); `URL_NOT_ALLOWED` / `FETCH_FAILED` for `image_url`.",
    401: "`UNAUTHORIZED`: no API key, or an unknown or revoked one.",
    404: "`NOT_FOUND`: no such id, or another key's.",
    409: "`NOT_FINISHED` / `JOB_FAILED`; `JOB_FINISHED` / `BULK_FINISHED` (nothing left to cancel);"
    " `NO_DELIVERY` (no webhook to send again).",
    410: "`RESULT_EXPIRED` / `RESULT_DELETED`.",
    413: "`PAYLOAD_TOO_LARGE`: over the upload or pixel limit; a video over its byte, duration, frame or"
    " per-frame pixel limit.",
    415: "`UNSUPPORTED_MEDIA_TYPE`: not JPEG, PNG, WebP, MP4, MOV, MKV or WebM; a video without a video"
    " stream (audio only) or with a codec that cannot be decoded.",
    429: "`RATE_LIMITED`: the key submits faster than allowed.",
    503: "`QUEUE_FULL`, `QUEUE_UNAVAILABLE`, `STORE_UNAVAILABLE` or `MODELS_NOT_READY`.",
}


def _errors(components: Components, *statuses: int) -> dict[str, Schema]:
    return error_responses(components.ref(NativeError), {status: _ERRORS[status] for status in statuses})


def _id(name: str, what: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": what, "schema": {"type": "string"}}


def _location(description: str) -> Schema:
    return {"Location": {"description": description, "schema": {"type": "string"}}}


def jobs_paths(c: Components) -> Schema:
    job_id = _id("job_id", "The job's id.")
    accepted = json_body(c.ref(jobs.JobAccepted), "Queued: poll `links.self`.")
    accepted["headers"] = _location("The job's URL.")
    finished = json_body(c.ref(JobView), "With `wait`: the job finished in time.")
    finished["headers"] = _location("The job's URL.")
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "createJob",
                "tags": ["Jobs", "api4ai"],
                "summary": "Blur one image or video",
                "description": "Exactly one image input: a file (multipart `image`, or `video`),"
                " `image_base64`, `image_url` or `s3` (JSON), or api4ai's `image` Buffer / byte array (JSON)."
                " Options beside it (in JSON, null is the default). A video (MP4, MOV, MKV or WebM, told by"
                " its bytes) becomes a video job: its `input` has `duration`, `fps`, `frames` and `codec`,"
                " `progress` while it runs, and its result is an H.264 MP4 (README, Video).",
                "security": NATIVE_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": c.ref(JobForm, "validation")},
                        "application/json": {"schema": c.ref(JobJson, "validation")},
                        "application/x-www-form-urlencoded": {"schema": c.ref(JobUrlencoded, "validation")},
                    },
                },
                "responses": {
                    "200": finished,
                    "202": accepted,
                    **_errors(c, 400, 401, 413, 415, 429, 503),
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "parameters": [job_id],
            "get": {
                "operationId": "getJob",
                "tags": ["Jobs", "api4ai"],
                "summary": "A job's status, detections and result",
                "security": NATIVE_SECURITY,
                "parameters": [
                    {
                        "name": "output",
                        "in": "query",
                        "description": "api4ai: `base64` adds the blurred image to `result` (any case).",
                        "schema": {"type": "string", "enum": ["url", "base64"], "default": "url"},
                    }
                ],
                "responses": {
                    "200": json_body(c.ref(JobView), "The job."),
                    **_errors(c, 400, 401, 404, 503),
                },
            },
            "delete": {
                "operationId": "deleteJobResult",
                "tags": ["Jobs"],
                "summary": "Delete a finished job's result now",
                "description": "The job record stays, with `result: null` and `result_deleted_at`.",
                "security": NATIVE_SECURITY,
                "responses": {"204": {"description": "Deleted."}, **_errors(c, 401, 404, 409, 503)},
            },
        },
        "/v1/jobs/{job_id}/cancel": {
            "parameters": [job_id],
            "post": {
                "operationId": "cancelJob",
                "tags": ["Jobs"],
                "summary": "Cancel a queued or running job",
                "description": "The job ends failed `CANCELLED` with no result: a queued one when a worker"
                " comes to it (unread; its upload deleted), a running video at its next batch of frames. A"
                " photo already running finishes. Its webhook is sent as for any failed job.",
                "security": NATIVE_SECURITY,
                "responses": {
                    "202": json_body(c.ref(JobView), "Asked: the job as it is now; poll it to its end."),
                    **_errors(c, 401, 404, 409, 503),
                },
            },
        },
        "/v1/jobs/{job_id}/deliveries": {"parameters": [job_id], **_deliveries(c, "job", "Jobs", "Job")},
        "/v1/jobs/{job_id}/result": {
            "parameters": [job_id],
            "get": {
                "operationId": "getJobResult",
                "tags": ["Jobs"],
                "summary": "Redirect to the blurred image",
                "security": NATIVE_SECURITY,
                "responses": {
                    "302": {
                        "description": "To the presigned URL of the blurred image.",
                        "headers": _location("The presigned URL (valid 24 h after the job finished)."),
                    },
                    **_errors(c, 401, 404, 409, 410, 503),
                },
            },
        },
    }


def _deliveries(c: Components, subject: str, tag: str, name: str) -> Schema:
    """``GET`` and ``POST`` of a job's or bulk job's ``…/deliveries``."""
    accepted = json_body(c.ref(deliveries.RedeliveryAccepted), "Queued: its attempts appear in the list.")
    accepted["headers"] = _location("The deliveries list.")
    return {
        "get": {
            "operationId": f"list{name}Deliveries",
            "tags": [tag, "Webhooks"],
            "summary": f"Every attempt of the {subject}'s webhook deliveries",
            "description": "The last 50 attempts, oldest first: URL, HTTP status, latency, a short error and"
            " the outcome (`delivered`, `retrying`, `failed`: not retried, `gave_up`: the retry window is"
            " over). Nothing of the images.",
            "security": NATIVE_SECURITY,
            "responses": {
                "200": json_body(c.ref(deliveries.Deliveries), "The attempts."),
                **_errors(c, 401, 404, 503),
            },
        },
        "post": {
            "operationId": f"redeliver{name}",
            "tags": [tag, "Webhooks"],
            "summary": f"Send the {subject}'s webhook again",
            "description": "The same event under the same `webhook-id` (deduplicate on it), signed anew and"
            " retried as the first delivery; a delivery of the same event still retrying stops.",
            "security": NATIVE_SECURITY,
            "responses": {"202": accepted, **_errors(c, 401, 404, 409, 429, 503)},
        },
    }


def bulk_paths(c: Components) -> Schema:
    accepted = json_body(c.ref(bulk.BulkAccepted), "Recorded: a worker lists the objects.")
    accepted["headers"] = _location("The bulk job's URL.")
    return {
        "/v1/bulk": {
            "post": {
                "operationId": "createBulk",
                "tags": ["Bulk"],
                "summary": "Blur every image under a bucket prefix",
                "security": NATIVE_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": c.ref(BulkRequest, "validation")}},
                },
                "responses": {"202": accepted, **_errors(c, 400, 401, 413, 429, 503)},
            }
        },
        "/v1/bulk/{bulk_id}": {
            "parameters": [_id("bulk_id", "The bulk job's id.")],
            "get": {
                "operationId": "getBulk",
                "tags": ["Bulk"],
                "summary": "A bulk job's progress and one page of its jobs",
                "security": NATIVE_SECURITY,
                "parameters": [
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    },
                ],
                "responses": {
                    "200": json_body(c.ref(bulk.BulkView), "The bulk job."),
                    **_errors(c, 400, 401, 404, 503),
                },
            },
            "delete": {
                "operationId": "cancelBulk",
                "tags": ["Bulk"],
                "summary": "Cancel what has not started",
                "description": "Listing stops; each child not started yet ends failed `CANCELLED` without"
                " reading or writing anything (no webhook of its own); started children finish. The status"
                " is `cancelling` until the last started child ended, then `cancelled`, and `bulk.finished`"
                " is sent.",
                "security": NATIVE_SECURITY,
                "responses": {
                    "202": json_body(c.ref(bulk.BulkView), "Cancelled: the bulk job and its first jobs."),
                    **_errors(c, 401, 404, 409, 503),
                },
            },
        },
        "/v1/bulk/{bulk_id}/deliveries": {
            "parameters": [_id("bulk_id", "The bulk job's id.")],
            **_deliveries(c, "bulk job", "Bulk", "Bulk"),
        },
    }


def _page(operation_id: str, tag: str, summary: str, media: str = "text/html") -> Schema:
    return {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "security": PUBLIC,
        "responses": {"200": {"description": summary, "content": {media: {"schema": {"type": "string"}}}}},
    }


def public_paths(c: Components) -> Schema:
    readiness = c.ref(health.Readiness)
    not_ready = json_body(readiness, "Not ready: each check says why.")
    not_ready["headers"] = {"Retry-After": RETRY_AFTER}
    asset = {
        **_page("demoAsset", "Web demo", "The demo's stylesheet or script", "text/css"),
        "parameters": [
            {
                "name": "asset",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": sorted(demo.ASSETS)},
            }
        ],
    }
    asset["responses"]["200"]["content"]["text/javascript"] = {"schema": {"type": "string"}}
    asset["responses"]["404"] = json_body(c.ref(NativeError), "No such asset.")
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["Health"],
                "summary": "The process answers",
                "security": PUBLIC,
                "responses": {"200": json_body(c.ref(health.Health), "Up.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["Health"],
                "summary": "Redis, the store and at least one worker with its models are ready",
                "security": PUBLIC,
                "responses": {"200": json_body(readiness, "Ready."), "503": not_ready},
            }
        },
        "/metrics": {
            "get": {
                **_page("metrics", "Health", "Prometheus metrics", "text/plain"),
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(c, 503),
                },
            }
        },
        "/openapi.json": {
            "get": {
                **_page("openapi", "Docs", "This document", "application/json"),
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/docs": {"get": _page("docs", "Docs", "Swagger UI for this document (works offline)")},
        "/": {"get": _page("demoRoot", "Web demo", "The web demo")},
        "/demo": {"get": _page("demo", "Web demo", "The web demo")},
        "/demo/": {"get": _page("demoSlash", "Web demo", "The web demo")},
        "/demo/{asset}": {"get": asset},
    }


def _header(name: str, description: str, pattern: str | None = None, *, deprecated: bool = False) -> Schema:
    schema: Schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    parameter: Schema = {"name": name, "in": "header", "required": not deprecated, "description": description}
    if deprecated:
        parameter["deprecated"] = True
    return {**parameter, "schema": schema}


_RETRIES = (
    " Any answer but a 2xx is retried, as are timeouts and connection errors, after a jittered exponential"
    " backoff (2 s, 4 s, … up to an hour, each a random 50-100 % of that) until"
    " `VEIL_WEBHOOKS__RETRY_FOR_SECONDS` (24 h) after the event; 410 Gone stops the retries. Every attempt is"
    " listed at `…/deliveries`."
)
_HOOK_RESPONSES: Schema = {
    "200": {"description": "Any 2xx: delivered."},
    "410": {"description": "Gone: not retried (the delivery is recorded `failed`)."},
    "503": {"description": "Any other status (or none): retried."},
}


def _signature_headers(msg_id: str, events: str) -> list[Schema]:
    return [
        _header(ID_HEADER, f"`{msg_id}`: the same on every retry and redelivery.", r"^msg_\S+$"),
        _header(TIMESTAMP_HEADER, "Unix seconds of this attempt.", r"^[0-9]+$"),
        _header(
            SIGNATURE_HEADER,
            'v1,<base64 HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>." + body)>',
            r"^v1,\S+$",
        ),
        _header(EVENT_HEADER, events),
        _header(DELIVERY_HEADER, "A fresh id per attempt."),
        _header(
            LEGACY_SIGNATURE_HEADER,
            'Deprecated: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>.',
            deprecated=True,
        ),
    ]


def webhooks(c: Components) -> Schema:
    """``webhooks``: the POSTs a ``callback_url`` receives, signed per Standard Webhooks."""
    signed = (
        "Signed per Standard Webhooks with the key's webhook secret (`whsec_…`): verify the signature over"
        " the raw body and that the timestamp is within five minutes."
    )
    return {
        "jobFinished": {
            "post": {
                "operationId": "jobFinished",
                "tags": ["Webhooks"],
                "summary": "A job with a `callback_url` ended",
                "description": signed + _RETRIES,
                "parameters": _signature_headers(
                    "msg_<job id>_job_<status>", "`job.succeeded` or `job.failed`."
                ),
                "requestBody": json_body(c.ref(WebhookEvent), "The event and the job JSON."),
                "responses": _HOOK_RESPONSES,
            }
        },
        "bulkFinished": {
            "post": {
                "operationId": "bulkFinished",
                "tags": ["Webhooks", "Bulk"],
                "summary": "The last child of a bulk job with a `callback_url` ended",
                "description": signed + " Sent once per bulk job, cancelled ones included." + _RETRIES,
                "parameters": _signature_headers("msg_<bulk id>_bulk_finished", "`bulk.finished`."),
                "requestBody": json_body(c.ref(BulkFinishedEvent), "The event and the bulk job's JSON."),
                "responses": _HOOK_RESPONSES,
            }
        },
    }
