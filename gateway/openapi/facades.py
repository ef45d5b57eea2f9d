"""The vendor-compatible facades' paths, each under its own tag with its own error schema and auth."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from gateway.openapi.components import (
    Components,
    Schema,
    binary,
    error_responses,
    json_body,
    or_empty,
    unset,
)
from gateway.routes import plateblurer, platerecognizer, vehicore

VEHICORE = "VehiCore"
PLATE_RECOGNIZER = "Plate Recognizer"
PLATEBLURER = "PlateBlurer"

TAGS = [
    {
        "name": VEHICORE,
        "description": "VehiCore-compatible anonymization: `X-API-Key`, a multipart `image`, errors"
        " `{message, code}` (415 and 503 without a code).",
    },
    {
        "name": PLATE_RECOGNIZER,
        "description": "Plate Recognizer Blur-compatible: `Authorization: Token <key>`, errors `{error}`"
        " (403 for auth). With `VEIL_GATEWAY__PLATERECOGNIZER_PORT` set, the same `POST /` (no token"
        " needed) and `GET /info/` also answer on that port, like the vendor's on-premise SDK.",
    },
    {
        "name": PLATEBLURER,
        "description": "Gatiosoft PlateBlurer-compatible: HTTP Basic auth (the key is the password), a JSON"
        " body, errors `[{cd, description}]`.",
    },
]

_VEHICORE_MODES = {"/api/anonymize": "plates", "/api/anonymize/face": "faces", "/api/anonymize/all": "all"}
Empty = Literal[""]


def _response_field() -> dict[str, Any]:
    mode = Literal["json", "image", "mixed"] | Empty
    return {"response": (mode, unset("`json`, `image` or `mixed` (any case); the query string wins."))}


def _tuning_fields() -> dict[str, Any]:
    """``padding`` / ``shrink`` / ``blur`` with VehiCore's documented ranges (empty: the default)."""
    return {
        name: (
            Annotated[float, Field(ge=low, le=high)] | Empty,
            unset(f"{low:g}-{high:g}; the query string wins."),
        )
        for name, (low, high) in vehicore.RANGES.items()
    }


VehiCoreForm = create_model(
    "VehiCoreForm",
    __config__=ConfigDict(extra="forbid"),
    image=(bytes, Field(description="The image: JPEG, PNG or WebP.")),
    **_response_field(),
    **_tuning_fields(),
)


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def vehicore_paths(c: Components) -> Schema:
    errors = error_responses(
        c.ref(vehicore.VehiCoreError),
        {
            400: "`VALIDATION_ERROR`: a bad or missing image or parameter, or an image over the size limit.",
            401: "`UNAUTHORIZED`: a missing or unknown `X-API-Key`.",
            415: "Not a supported image (no code, as documented).",
            429: "`RATE_LIMITED`: the key submits faster than allowed.",
            503: "Not ready, or the job did not finish in time (then with its `job_id`; no code).",
        },
    )
    metadata = c.ref(vehicore.VehiCoreMetadata)
    image = {"schema": binary("The anonymized image.", "image/*")}
    parameters = [
        _query(
            "response",
            or_empty({"type": "string", "enum": list(vehicore.RESPONSE_MODES)}),
            "`json` (metadata), `image`, or `mixed` (both, the default); any case.",
        ),
        *(
            _query(name, or_empty({"type": "number", "minimum": low, "maximum": high}), f"{low:g}-{high:g}.")
            for name, (low, high) in vehicore.RANGES.items()
        ),
    ]
    paths: Schema = {}
    for path, mode in _VEHICORE_MODES.items():
        paths[path] = {
            "post": {
                "operationId": f"vehicoreAnonymize{mode.capitalize()}",
                "tags": [VEHICORE],
                "summary": f"Anonymize {'plates and faces' if mode == 'all' else mode}",
                "security": [{"ApiKey": []}],
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": c.ref(VehiCoreForm, "validation")}},
                },
                "responses": {
                    "200": {
                        "description": "By `response`: the metadata, the image, or both as multipart/mixed.",
                        "headers": {
                            "X-Job-Id": {"description": "(image, mixed)", "schema": {"type": "string"}}
                        },
                        "content": {
                            "application/json": {"schema": metadata},
                            "image/jpeg": image,
                            "image/png": image,
                            "image/webp": image,
                            "multipart/mixed": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "metadata": metadata,
                                        "image": binary("The image.", "image/*"),
                                    },
                                },
                            },
                        },
                    },
                    **errors,
                },
            }
        }
    return paths


def platerecognizer_paths(c: Components) -> Schema:
    errors = error_responses(
        c.ref(platerecognizer.PlateRecognizerError),
        {
            400: "A bad parameter or image (an unsupported one too), or a refused `upload_url`.",
            403: "A missing or wrong `Authorization: Token`.",
            413: "The image is over the size limit.",
            429: "The key submits faster than allowed.",
            503: "Not ready, or the job did not finish in time (then with its `job_id`).",
        },
    )
    form = platerecognizer.PlateRecognizerForm
    texts: dict[str, Any] = {
        name: (field.annotation, field)
        for name, field in form.model_fields.items()
        if name not in platerecognizer.FILE_FIELDS
    }
    urlencoded = create_model(
        "PlateRecognizerUrlencoded",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"required": ["upload_url"]}),
        **texts,
    )
    encoding = {name: {"style": "form", "explode": True} for name in _repeatable(form)}
    return {
        "/v1/blur": {
            "post": {
                "operationId": "plateRecognizerBlur",
                "tags": [PLATE_RECOGNIZER],
                "summary": "Blur plates and faces",
                "security": [{"PlateRecognizerToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": c.ref(form, "validation")},
                        "application/x-www-form-urlencoded": {
                            "schema": c.ref(urlencoded, "validation"),
                            "encoding": encoding,
                        },
                    },
                },
                "responses": {
                    "200": json_body(
                        c.ref(platerecognizer.PlateRecognizerBlur), "Detections, and the image."
                    ),
                    **errors,
                },
            }
        },
        "/info/": {
            "get": {
                "operationId": "plateRecognizerInfo",
                "tags": [PLATE_RECOGNIZER],
                "summary": "Version",
                "security": [],
                "responses": {
                    "200": json_body(c.ref(platerecognizer.PlateRecognizerInfo), "Veil's version.")
                },
            }
        },
    }


def _repeatable(model: type[BaseModel]) -> list[str]:
    return [
        name
        for name, field in model.model_fields.items()
        if getattr(field.annotation, "__origin__", None) is list
    ]


def plateblurer_paths(c: Components) -> Schema:
    errors = error_responses(
        c.ref(plateblurer.PlateBlurerErrors),
        {
            400: "1014: invalid JSON, fields or base64; 1013: nothing to upload; 2001: the image can't be"
            " processed or the URL is refused.",
            401: "1001: missing, non-Basic or wrong credentials.",
            413: "1013: the request is over 5 MB.",
            429: "2001: the key submits faster than allowed.",
            503: "2001: not ready, or the job did not finish in time (then with its `job_id`).",
        },
    )
    operation = {
        "tags": [PLATEBLURER],
        "summary": "Blur plates",
        "security": [{"Basic": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": c.ref(plateblurer.PlateBlurerRequest, "validation")}},
        },
        "responses": {
            "200": json_body(c.ref(plateblurer.PlateBlurerAnswer), "Predictions and the photo."),
            **errors,
        },
    }
    return {
        "/plateblurer": {"post": {"operationId": "plateBlurer", **operation}},
        "/plateblurer.aspx": {"post": {"operationId": "plateBlurerAspx", **operation}},
    }


def facade_paths(c: Components) -> Schema:
    return {**vehicore_paths(c), **platerecognizer_paths(c), **plateblurer_paths(c)}
