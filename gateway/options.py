"""Blur options from form fields or JSON keys → :class:`shared.jobs.BlurOptions`, with 400s that name
the offending field. An option whose value is an object (``exclusion``) comes as a JSON object in JSON and
as JSON text in forms."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Annotated, Any, get_args

import orjson
import pydantic
from pydantic import StringConstraints

from shared.errors import ValidationError
from shared.jobs import MAX_SKIP_PATTERN_LENGTH, BlurOptions

# Set by the gateway itself, never by clients. logo_key (a facade's stored logo): naming an object key
# would let a client read other jobs' uploads. face_strength / plate_strength: 0 means "detect, don't
# blur", which only the Plate Recognizer facade offers, as that vendor documents it (blur intensity
# 0..10); natively every job blurs what it finds.
INTERNAL_OPTIONS = frozenset({"logo_key", "face_strength", "plate_strength"})
OPTION_NAMES: tuple[str, ...] = tuple(
    name for name in BlurOptions.model_fields if name not in INTERNAL_OPTIONS
)


def _is_object(annotation: object) -> bool:
    return any(
        isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)
        for kind in (annotation, *get_args(annotation))
    )


# Options whose value is an object: a form carries them as JSON text.
OBJECT_OPTIONS = frozenset(
    name for name in OPTION_NAMES if _is_object(BlurOptions.model_fields[name].annotation)
)


def parse_blur_options(raw: Mapping[str, object]) -> BlurOptions:
    """Validate option values as sent (form strings or JSON values); ``None`` means "the default"."""
    unknown = sorted(name for name in raw if name not in OPTION_NAMES)
    if unknown:
        raise ValidationError(
            f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
            f" (known: {', '.join(OPTION_NAMES)})"
        )
    values = {name: _decoded(name, value) for name, value in raw.items() if value is not None}
    try:
        return BlurOptions.model_validate(values)
    except pydantic.ValidationError as exc:
        raise ValidationError(_describe(exc)) from exc


def _decoded(name: str, value: object) -> object:
    if name not in OBJECT_OPTIONS or not isinstance(value, str):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"invalid option {name}: not a JSON object ({exc})") from exc


def _describe(exc: pydantic.ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "options"
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        if field.startswith("targets"):
            message = f"{message} (use faces, plates or faces,plates)"
            field = "targets"
        problems.append(f"{field}: {message}")
    return "invalid option " + "; ".join(dict.fromkeys(problems))


# -- the options as the OpenAPI document describes them ---------------------------------------------------


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
