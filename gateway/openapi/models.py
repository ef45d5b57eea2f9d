"""Models of the native API that exist only to be described: the job JSON (``JobRecord.public()`` and the
api4ai fields), the webhook payload, the submission bodies and the error body. Each is derived from the
contract's own models, so a field added there appears here without a second edit."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from gateway.api4ai import OBJECTS_TO_HIDE, OUTPUTS, Api4aiFields
from gateway.inputs import BASE64_KEY, IMAGE_FIELD, S3_KEY, URL_KEY, VIDEO_FIELD
from gateway.openapi.components import unset
from gateway.openapi.options import option_fields
from gateway.routes.bulk import BulkFields, BulkSummary
from gateway.routes.jobs import SelfLink
from shared.jobs import PRIVATE_JOB_FIELDS, JobRecord, ObjectRef, PublicResult


class NativeError(BaseModel):
    """Every native error: a stable ``code`` and a message for people."""

    message: str
    code: str = Field(examples=["VALIDATION_ERROR"])


class JobLinks(SelfLink):
    result: str = Field(examples=["/v1/jobs/3f2a…/result"])


def _absent_unless_set(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


_NULL_HIDDEN: Any = cast(Any, SkipJsonSchema)[None]  # None, left out of the schema


def _optional(annotation: Any, description: str | None = None) -> Any:
    """A field that is left out rather than null (the schema shows only its type)."""
    return (
        annotation | _NULL_HIDDEN,
        Field(default=None, description=description, json_schema_extra=_absent_unless_set),
    )


_PUBLIC_FIELDS: dict[str, Any] = {
    name: (field.annotation, field)
    for name, field in JobRecord.model_fields.items()
    if name not in PRIVATE_JOB_FIELDS and name != "result"
}
Job = create_model(
    "Job",
    __doc__="A job as its owner sees it (and as webhooks carry it).",
    # Every key is always there (null when unset), but the api4ai ones of JobView.
    __config__=ConfigDict(json_schema_serialization_defaults_required=True),
    **_PUBLIC_FIELDS,
    result=(PublicResult | None, Field(default=None, description="Set once the job succeeded.")),
    links=(JobLinks, ...),
)


class ViewResult(PublicResult):
    base64: str | SkipJsonSchema[None] = Field(
        default=None,
        description="With `output=base64`: the blurred image itself.",
        json_schema_extra=_absent_unless_set,
    )


def _api4ai_optional(schema: dict[str, Any]) -> None:
    schema["required"] = [
        name for name in schema.get("required", []) if name not in Api4aiFields.model_fields
    ]


JobView = create_model(
    "JobView",
    __base__=Job,
    __doc__="`GET /v1/jobs/{id}`: the job, and once it succeeded the fields api4ai's clients read.",
    result=(ViewResult | None, Field(default=None, description="Set once the job succeeded.")),
    **{
        name: _optional(
            field.annotation, " ".join(filter(None, ["api4ai: once the job succeeded.", field.description]))
        )
        for name, field in Api4aiFields.model_fields.items()
    },
)
JobView.model_config["json_schema_extra"] = _api4ai_optional  # its own config (create_model copies Job's)


Event = Literal["job.succeeded", "job.failed"]
_EVENT_FIELDS: dict[str, Any] = {"event": (Event, ...), "job": (Job, ...)}
WebhookEvent = create_model(
    "WebhookEvent",
    __doc__="What the worker POSTs to a job's `callback_url` when the job ends.",
    **_EVENT_FIELDS,
)
_BULK_EVENT_FIELDS: dict[str, Any] = {"event": (Literal["bulk.finished"], ...), "bulk": (BulkSummary, ...)}
BulkFinishedEvent = create_model(
    "BulkFinishedEvent",
    __doc__="What the worker POSTs to a bulk job's `callback_url` once, when its last child ended (after a"
    " cancel too).",
    **_BULK_EVENT_FIELDS,
)


# -- submissions ---------------------------------------------------------------------------------------------

Byte = Annotated[int, Field(ge=0, le=255)]


class Buffer(BaseModel):
    """Node's JSON form of a Buffer."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Buffer"]
    data: list[Byte] = Field(min_length=1)


_HIDE = {name.capitalize() for name in OBJECTS_TO_HIDE}
_URL = "An http(s) URL the gateway fetches, with size and time limits and the SSRF guard."
_INPUTS = (IMAGE_FIELD, BASE64_KEY, URL_KEY, S3_KEY)
_FORM_INPUTS = (IMAGE_FIELD, VIDEO_FIELD, BASE64_KEY, URL_KEY)
_MEDIA = "JPEG, PNG or WebP; or a video: MP4, MOV, MKV or WebM"


def _answer_fields(*, form: bool) -> dict[str, Any]:
    """``callback_url`` and api4ai's ``objects_to_hide``, ``output``, ``wait``."""
    wait: Any = float | bool if form else float | bool | None
    hide: Any = Literal[tuple(sorted(_HIDE))]
    output: Any = Literal[OUTPUTS]
    return {
        "callback_url": (
            str if form else str | None,
            unset("Where to POST the finished job (webhook).", max_length=2048),
        ),
        "objects_to_hide": (
            hide if form else hide | None,
            unset("api4ai: instead of `targets` (any case)."),
        ),
        "output": (
            output if form else output | None,
            unset("api4ai: `base64` adds the image to the finished job's `result`."),
        ),
        "wait": (
            wait,
            unset(
                "api4ai: seconds (0-3600, capped at the facade timeout) or `true` (the timeout): answer 200"
                " with the finished job when it finishes in time, else 202.",
                {"minimum": 0, "maximum": 3600},
            ),
        ),
    }


def _exactly_one(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "oneOf": [{"required": [name]} for name in names],
        "not": {"required": ["objects_to_hide", "targets"]},
    }


_TEXT_INPUTS: dict[str, Any] = {
    BASE64_KEY: (str, unset("The image or video in base64 (a `data:image/…;base64,` URL too).")),
    URL_KEY: (str, unset(_URL, max_length=8192)),
}
_JSON_INPUTS: dict[str, Any] = {
    **_TEXT_INPUTS,
    S3_KEY: (ObjectRef, unset("An object in a bucket Veil may read (`VEIL_S3__READABLE_BUCKETS`).")),
    IMAGE_FIELD: (
        Buffer | Annotated[list[Byte], Field(min_length=1)],
        unset("api4ai: the image's bytes as a Buffer or an array."),
    ),
}
_FILE_INPUT: dict[str, Any] = {
    IMAGE_FIELD: (bytes, unset(f"The image file: {_MEDIA}.", {"contentMediaType": "image/*"})),
    VIDEO_FIELD: (
        bytes,
        unset(f"The same as `{IMAGE_FIELD}` (an alias for videos).", {"contentMediaType": "video/*"}),
    ),
}

JobJson = create_model(
    "JobSubmission",
    __doc__="Exactly one image input, and options; null means the default.",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_exactly_one(_INPUTS)),
    **_JSON_INPUTS,
    **_answer_fields(form=False),
    **option_fields(form=False),
)

JobForm = create_model(
    "JobSubmissionForm",
    __doc__="Exactly one image input, and options as text.",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_exactly_one(_FORM_INPUTS)),
    **_FILE_INPUT,
    **_TEXT_INPUTS,
    **_answer_fields(form=True),
    **option_fields(form=True),
)

JobUrlencoded = create_model(
    "JobSubmissionUrlencoded",
    __doc__="`image_base64` or `image_url`, and options as text (files go in multipart).",
    __config__=ConfigDict(extra="forbid", json_schema_extra=_exactly_one(_INPUTS[1:3])),
    **_TEXT_INPUTS,
    **_answer_fields(form=True),
    **option_fields(form=True),
)

BulkRequest = create_model(
    "BulkRequest",
    __base__=BulkFields,
    __doc__="A bulk job: where the originals are (and where copies go), and each child job's options.",
    **option_fields(form=False),
)
