"""The pieces every part of the document uses: schema references to pydantic models (generated together at
the end, so each model is one entry under ``components.schemas``), JSON bodies and error responses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

Schema = dict[str, Any]
REF_TEMPLATE = "#/components/schemas/{model}"

REQUEST_ID = {"$ref": "#/components/headers/X-Request-ID"}
RETRY_AFTER = {"$ref": "#/components/headers/Retry-After"}
HEADERS: Schema = {
    "X-Request-ID": {
        "description": "The client's own request id when it sent a short token, else a new one; every log"
        " line of the request carries it.",
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    },
}


class Components:
    """Collects the models the document refers to; :meth:`schemas` generates them all at once."""

    def __init__(self) -> None:
        self._wanted: dict[tuple[type[BaseModel], JsonSchemaMode], list[Schema]] = {}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> Schema:
        """A schema for ``model`` (``validation``: as a request takes it; ``serialization``: as a response
        carries it), filled in by :meth:`schemas`."""
        placeholder: Schema = {}
        self._wanted.setdefault((model, mode), []).append(placeholder)
        return placeholder

    def schemas(self) -> Schema:
        """``components.schemas``; fills every placeholder handed out by :meth:`ref`."""
        keys = list(self._wanted)
        refs, document = models_json_schema(keys, ref_template=REF_TEMPLATE)
        for key in keys:
            for placeholder in self._wanted[key]:
                placeholder.update(refs[key])
        defs: Schema = document.get("$defs", {})
        return dict(sorted(defs.items()))


def json_body(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses(
    schema: Schema, described: dict[int, str], *, media: Literal["application/json"] = "application/json"
) -> dict[str, Schema]:
    """One response per status, all with the same error ``schema``; 429 and 503 carry ``Retry-After``."""
    responses: dict[str, Schema] = {}
    for status, description in sorted(described.items()):
        response: Schema = {"description": description, "content": {media: {"schema": schema}}}
        if status in (429, 503):
            response["headers"] = {"Retry-After": RETRY_AFTER}
        responses[str(status)] = response
    return responses


def binary(description: str, media_type: str = "application/octet-stream") -> Schema:
    """A file in a form, or a binary body."""
    return {"type": "string", "format": "binary", "contentMediaType": media_type, "description": description}


def or_empty(schema: Schema) -> Schema:
    """``schema``, or an empty string (a form's unset field)."""
    return {"anyOf": [schema, {"type": "string", "maxLength": 0}]}


def with_request_ids(paths: Schema) -> None:
    """Every response of every operation carries ``X-Request-ID``."""
    for item in paths.values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID


def unset(description: str, extra: Schema | None = None, **constraints: Any) -> Any:
    """A pydantic field that is optional and has no default to show: left out unless given."""

    def schema_of(schema: Schema) -> None:
        schema.pop("default", None)
        schema.update(extra or {})

    return Field(default=None, description=description, json_schema_extra=schema_of, **constraints)
