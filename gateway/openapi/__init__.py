"""The OpenAPI 3.1 document of everything the gateway serves, generated from the pydantic models it
validates and answers with (:mod:`shared.jobs`, :mod:`gateway.options`, the route modules' response
models): a field added to the job contract appears here without a second edit.

:mod:`.native` describes the native API, its webhook and the unauthenticated routes, :mod:`.facades` the
vendor-compatible ones, :mod:`.models` the native shapes that exist only to be described (the options
from :mod:`.options`), and :mod:`.components` what they share. ``document()`` builds it once per process.
"""

from __future__ import annotations

import functools
from importlib import metadata

import orjson

from gateway.openapi.admin import TAGS as ADMIN_TAGS
from gateway.openapi.admin import admin_paths, usage_paths
from gateway.openapi.components import HEADERS, Components, Schema, with_request_ids
from gateway.openapi.facades import TAGS as FACADE_TAGS
from gateway.openapi.facades import facade_paths
from gateway.openapi.native import bulk_paths, jobs_paths, public_paths, webhooks

OPENAPI_VERSION = "3.1.0"

SECURITY_SCHEMES: Schema = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A Veil API key."},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "A Veil API key as a bearer token."},
    "PlateRecognizerToken": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Token <Veil API key>`, as Plate Recognizer's clients send it.",
    },
    "Basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Any user name, the Veil API key as the password (PlateBlurer).",
    },
}

TAGS = [
    {"name": "Jobs", "description": "Blur one image: submit, poll, fetch the result, delete it early."},
    {"name": "Bulk", "description": "Blur every image under a bucket prefix, each as an ordinary job."},
    {"name": "Webhooks", "description": "What a job's `callback_url` receives when the job ends."},
    {
        "name": "api4ai",
        "description": "api4ai Image Anonymization's inputs and outputs, as options of the native API:"
        " `objects_to_hide`, `output`, `wait`, Buffer or byte-array images; `objects`, `format`, `width`,"
        " `height` on succeeded jobs.",
    },
    {"name": "Health", "description": "Liveness, readiness and Prometheus metrics (no key needed)."},
    {"name": "Docs", "description": "This document and its Swagger UI."},
    {"name": "Web demo", "description": "A page that blurs a photo through this API with a key."},
    *ADMIN_TAGS,
    *FACADE_TAGS,
]


def _version() -> str:
    try:
        return metadata.version("veil")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_document() -> Schema:
    """The whole document, built from the models now."""
    components = Components()
    paths = {
        **jobs_paths(components),
        **bulk_paths(components),
        **admin_paths(components),
        **usage_paths(components),
        **facade_paths(components),
        **public_paths(components),
    }
    with_request_ids(paths)
    hooks = webhooks(components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Veil",
            "version": _version(),
            "summary": "Self-hosted face and licence-plate blurring",
            "description": "Submit an image, poll the job, fetch the blurred result (a presigned URL valid"
            " 24 h). Native errors are `{message, code}`; each vendor-compatible API answers in its vendor's"
            " own shape.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": TAGS,
        "paths": paths,
        "webhooks": hooks,
        "components": {
            "schemas": components.schemas(),
            "securitySchemes": SECURITY_SCHEMES,
            "headers": HEADERS,
        },
    }


@functools.cache
def document() -> bytes:
    """The document as JSON, built on first use and kept: it depends on the code only."""
    return orjson.dumps(build_document())
