"""The blur options as the OpenAPI document describes them: every form of value
:func:`gateway.options.parse_blur_options` takes, in JSON bodies and in forms (text fields)."""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, get_args

from pydantic import StringConstraints

from gateway.options import OBJECT_OPTIONS, OPTION_NAMES
from shared.jobs import MAX_SKIP_PATTERN_LENGTH, BlurOptions


def _any_case(word: str) -> str:
    return "".join(f"[{char.upper()}{char}]" for char in word)


# `targets` as text: faces and/or plates, comma-separated, any case (what _parse_targets accepts).
_TARGET = f"({_any_case('faces')}|{_any_case('plates')})"
TARGETS_TEXT = Annotated[str, StringConstraints(pattern=rf"^[\s,]*{_TARGET}(\s*,[\s,]*{_TARGET})*[\s,]*$")]
SKIP_PATTERN_TEXT = Annotated[str, StringConstraints(min_length=1, max_length=MAX_SKIP_PATTERN_LENGTH)]


def _form_schema(extra: dict[str, Any], schema: dict[str, Any]) -> None:
    """A form field's schema: no default where a text field has none to show (null, a list)."""
    schema.update(extra)
    if schema.get("default") is None or isinstance(schema.get("default"), list):
        schema.pop("default", None)


def option_fields(*, form: bool) -> dict[str, Any]:
    """The public options as ``pydantic.create_model`` field definitions, with every form of value
    :func:`parse_blur_options` takes: in JSON, each may be null (the default) and ``targets`` /
    ``skip_regexp`` may be one string; in a form (text fields) ``targets`` is comma-separated text,
    ``skip_regexp`` one pattern and an object option JSON text."""
    fields: dict[str, Any] = {}
    for name in OPTION_NAMES:
        field = copy.copy(BlurOptions.model_fields[name])
        annotation: Any = field.annotation
        if form:  # text: no null
            extra: dict[str, Any] = {}
            present = [kind for kind in get_args(annotation) if kind is not type(None)]
            if len(present) == 1 and type(None) in get_args(annotation):
                annotation = present[0]
            if name == "targets":
                annotation, field.default = TARGETS_TEXT, ",".join(BlurOptions().targets)
            elif name == "skip_regexp":
                annotation = SKIP_PATTERN_TEXT
            elif name in OBJECT_OPTIONS:
                annotation, extra = str, {"contentMediaType": "application/json"}
            field.json_schema_extra = functools.partial(_form_schema, extra)
            fields[name] = (annotation, field)
            continue
        if name == "targets":
            annotation = annotation | TARGETS_TEXT
        elif name == "skip_regexp":
            annotation = annotation | SKIP_PATTERN_TEXT
        fields[name] = (annotation | None, field)
    return fields
