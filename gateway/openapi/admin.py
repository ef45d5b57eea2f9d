"""The admin API (keys as accounts, privacy requests) and ``GET /v1/usage``, described from the models the
routes validate and answer with (:mod:`gateway.routes.admin`, :mod:`gateway.routes.usage`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from gateway.openapi.components import Components, Schema, error_responses, json_body
from gateway.openapi.models import NativeError
from gateway.openapi.native import NATIVE_SECURITY
from gateway.routes import admin
from shared.deliveries import DeliveryAttempt
from shared.quotas import QuotaState
from shared.usage import UsageDay
from shared.usagereport import UsageReport

TAGS = [
    {
        "name": "Admin",
        "description": "Keys as accounts, for `admin`-scoped keys only: create (with credits and caps), list,"
        " show, update, rotate and revoke; export and erase everything held about a key.",
    },
    {"name": "Usage", "description": "Use per key per UTC day: a key's own, every key's for admins."},
]

_ERRORS = {
    400: "`VALIDATION_ERROR`: the body or query, naming the field and what is wrong.",
    401: "`UNAUTHORIZED`: no API key, or an unknown or revoked one.",
    403: "`FORBIDDEN`: the key lacks the scope (`admin` for `/v1/admin/…`; another key's usage).",
    404: "`NOT_FOUND`: no key with that id (export and erase: nothing held about it).",
    409: "`JOBS_IN_FLIGHT`: the key (now revoked) still has queued or running jobs; erase again later.",
    503: "`QUEUE_UNAVAILABLE` (Redis) or `STORE_UNAVAILABLE` (erasing objects).",
}


class KeyRecord(BaseModel):
    """The key's record in an export: never the key, its digest or its webhook secret."""

    id: str
    name: str
    created_at: str
    expires_at: str | None
    scopes: list[str]
    rotated_at: str | None


class ExportedDeliveries(BaseModel):
    jobs: dict[str, list[DeliveryAttempt]] = Field(description="Each job's delivery attempts, by job id.")
    bulk: dict[str, list[DeliveryAttempt]] = Field(description="Each bulk job's, by bulk job id.")


class KeyExport(BaseModel):
    """Everything Veil holds about a key, as one document."""

    version: int = Field(examples=[1])
    exported_at: str
    key_id: str
    key: KeyRecord | None = Field(description="Null once the key is revoked (its data may remain).")
    quota: QuotaState
    usage: list[UsageDay] = Field(description="Each day it was used, of the 400 days kept.")
    jobs: list[dict[str, Any]] = Field(description="Its jobs' records, as `GET /v1/jobs/{id}` shows them.")
    bulk_jobs: list[dict[str, Any]]
    deliveries: ExportedDeliveries


def _errors(c: Components, *statuses: int) -> dict[str, Schema]:
    return error_responses(c.ref(NativeError), {status: _ERRORS[status] for status in statuses})


def _body(c: Components, model: type[BaseModel], *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": c.ref(model, "validation")}}}


def _operation(operation_id: str, summary: str, responses: Schema, **extra: Any) -> Schema:
    return {
        "operationId": operation_id,
        "tags": ["Admin"],
        "summary": summary,
        "security": NATIVE_SECURITY,
        "responses": responses,
        **extra,
    }


def admin_paths(c: Components) -> Schema:
    key_id = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
    view = json_body(c.ref(admin.KeyView), "The key, with its limits and use.")
    created = json_body(c.ref(admin.KeyCreated), "Created: the key and its webhook secret, shown this once.")
    created["headers"] = {"Location": {"description": "The key's admin URL.", "schema": {"type": "string"}}}
    export = json_body(c.ref(KeyExport), "Everything held about the key (an attachment).")
    return {
        "/v1/admin/keys": {
            "post": _operation(
                "createKey",
                "Create a key (an account) with its scopes and limits",
                {"201": created, **_errors(c, 400, 401, 403, 503)},
                requestBody=_body(c, admin.KeyCreate),
            ),
            "get": _operation(
                "listKeys",
                "Every live key with its limits and use",
                {"200": json_body(c.ref(admin.KeyList), "The keys."), **_errors(c, 401, 403, 503)},
            ),
        },
        "/v1/admin/keys/{key_id}": {
            "parameters": [key_id],
            "get": _operation(
                "getKey", "A key with its quota state", {"200": view, **_errors(c, 401, 403, 404)}
            ),
            "patch": _operation(
                "updateKey",
                "Change a key's name, scopes, credits or caps",
                {"200": view, **_errors(c, 400, 401, 403, 404, 503)},
                requestBody=_body(c, admin.KeyUpdate),
                description="Only the fields given change; null removes a limit. `credits` sets the balance,"
                " `add_credits` adds to it.",
            ),
            "delete": _operation(
                "revokeKey",
                "Revoke a key (its data stays until erased or expired)",
                {"204": {"description": "Revoked."}, **_errors(c, 401, 403, 404, 503)},
            ),
        },
        "/v1/admin/keys/{key_id}/rotate": {
            "parameters": [key_id],
            "post": _operation(
                "rotateKey",
                "A new key for the same account; the old one works during a grace period",
                {
                    "200": json_body(c.ref(admin.Rotated), "The new key, shown once."),
                    **_errors(c, 400, 401, 403, 404),
                },
                requestBody=_body(c, admin.RotateRequest, required=False),
                description="Jobs, usage, limits and scopes stay with the key's id. Without a body the old"
                " key works one more hour.",
            ),
        },
        "/v1/admin/keys/{key_id}/export": {
            "parameters": [key_id],
            "get": _operation(
                "exportKey",
                "Everything Veil holds about a key, as one JSON document",
                {"200": export, **_errors(c, 401, 403, 404, 503)},
            ),
        },
        "/v1/admin/keys/{key_id}/erase": {
            "parameters": [key_id],
            "post": _operation(
                "eraseKey",
                "Revoke a key and delete everything held about it",
                {
                    "200": json_body(c.ref(admin.Erased), "Erased; the counts are also the audit line."),
                    **_errors(c, 401, 403, 404, 409, 503),
                },
                description="Job records, usage, quotas, webhook deliveries, bulk jobs, and the originals and"
                " results still in Veil's bucket. One audit line (key id, time, counts) is kept.",
            ),
        },
    }


def usage_paths(c: Components) -> Schema:
    def day(name: str, what: str) -> Schema:
        return {
            "name": name,
            "in": "query",
            "description": what,
            "schema": {"type": "string", "format": "date"},
        }

    return {
        "/v1/usage": {
            "get": {
                "operationId": "getUsage",
                "tags": ["Usage"],
                "summary": "Use per UTC day: images submitted, succeeded and failed, detections, credits",
                "security": NATIVE_SECURITY,
                "parameters": [
                    day("from", "First day (default: 30 days in all, up to `to`)."),
                    day("to", "Last day, inclusive (default: today, UTC). At most 366 days in all."),
                    {
                        "name": "key_id",
                        "in": "query",
                        "description": "Admins: one key's (default: every live key's). Others: their own.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": json_body(c.ref(UsageReport), "The days and their totals."),
                    **_errors(c, 400, 401, 403, 503),
                },
            }
        }
    }
