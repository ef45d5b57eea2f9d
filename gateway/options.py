"""Blur options from form fields or JSON keys → :class:`shared.jobs.BlurOptions`, with 400s that name
the offending field. An option whose value is an object (``exclusion``) comes as a JSON object in JSON and
as JSON text in forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import orjson
import pydantic

from shared.errors import ValidationError
from shared.jobs import BlurOptions

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
