"""The admin API, ``/v1/admin/keys…`` (an ``admin``-scoped key only: :mod:`gateway.auth`): create, list,
show, update, rotate and revoke keys, and the privacy requests: export everything held about a key, erase
it (``POST …/erase``: an action with a report, not the removal of one resource, hence not a DELETE).

A key is an account: its limits and credits (shared/quotas.py) are set here with it. The plaintext key is
in the answer of ``POST /v1/admin/keys`` and of a rotation only; Veil keeps its SHA-256.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
import pydantic
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway.auth import authenticate
from gateway.backends import redis_errors
from gateway.inputs import media_type, read_body
from gateway.responses import json_response
from gateway.state import API_KEYS, STORE
from shared.accounts import Accounts
from shared.apikeys import DEFAULT_SCOPES, MAX_GRACE_SECONDS, MAX_NAME_CHARS, ApiKey, Scope
from shared.errors import NotFoundError, ValidationError
from shared.quotas import KeyLimits, QuotaState, QuotaStore

routes = web.RouteTableDef()

BODY_LIMIT = 16 * 1024
MAX_AMOUNT = 10**12  # credits and caps: any sane figure, never a float or a string
DEFAULT_GRACE_SECONDS = 3600
M = TypeVar("M", bound=BaseModel)

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
LIMIT_NAMES = ("credits", "daily_limit", "monthly_limit", "max_concurrent")


class KeyCreate(BaseModel):
    """``POST /v1/admin/keys``: a new key; each limit left out (or null) is no limit."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    scopes: list[Scope] = Field(default=list(DEFAULT_SCOPES), min_length=1)
    credits: Count | None = Field(default=None, description="Credit balance; null: no credit limit.")
    daily_limit: Count | None = None
    monthly_limit: Count | None = None
    max_concurrent: Count | None = None


class KeyUpdate(BaseModel):
    """``PATCH /v1/admin/keys/{id}``: only what is given changes; null removes a limit."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    scopes: list[Scope] | None = Field(default=None, min_length=1)
    credits: Count | None = Field(default=None, description="Set the balance (null: no credit limit).")
    add_credits: Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)] | None = Field(
        default=None, description="Add to the balance (negative: take); a key without one gets one."
    )
    daily_limit: Count | None = None
    monthly_limit: Count | None = None
    max_concurrent: Count | None = None


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=MAX_GRACE_SECONDS)] = Field(
        default=DEFAULT_GRACE_SECONDS, description="How long the old key keeps working; 0: it stops now."
    )
    webhook_secret: StrictBool = Field(
        default=False, description="Replace the webhook signing secret too (at once)."
    )


class KeyView(BaseModel):
    """A key as admins see it: never the key itself, its digest or its webhook secret."""

    id: str
    name: str
    created_at: str
    expires_at: str | None = Field(description="Short-lived keys (the demo's) only.")
    scopes: list[Scope]
    rotated_at: str | None
    quota: QuotaState


class KeyCreated(KeyView):
    key: str = Field(description="The API key: shown this once, stored hashed.")
    webhook_secret: str = Field(description="Signs this key's webhook deliveries: shown this once.")


class KeyList(BaseModel):
    keys: list[KeyView]


class Rotated(BaseModel):
    id: str
    key: str = Field(description="The new API key: shown this once.")
    old_key_valid_until: str | None = Field(
        description="When the old key stops working; null: it already has."
    )
    webhook_secret: str | None = Field(description="The new signing secret when it was rotated too (once).")


class Erased(BaseModel):
    """What an erasure removed (the audit line holds the same counts)."""

    key_id: str
    key_revoked: bool
    jobs: int
    bulk_jobs: int
    deliveries: int
    objects: int = Field(description="Objects deleted from Veil's bucket: originals, results, logos.")
    redis_keys: int


def describe(exc: pydantic.ValidationError) -> str:
    """A pydantic error as one line naming each field."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{field}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(dict.fromkeys(problems))


async def parse_body(request: web.Request, model: type[M], *, required: bool = True) -> M:
    """The JSON body as ``model``; an empty body is ``{}`` when not ``required``; 400 naming the field."""
    if not request.body_exists and not required:
        return model()
    if media_type(request) != "application/json":
        raise ValidationError(
            f"{request.method} {request.path} takes a JSON body (Content-Type: application/json)"
        )
    try:
        body: Any = orjson.loads(await read_body(request, BODY_LIMIT))
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise ValidationError(describe(exc)) from exc


def _accounts(request: web.Request) -> Accounts:
    return Accounts(request.config_dict[API_KEYS], request.config_dict[STORE])


def _quotas(request: web.Request) -> QuotaStore:
    keys = request.config_dict[API_KEYS]
    return QuotaStore(keys.redis, keys.prefix)


async def _view(request: web.Request, key: ApiKey) -> KeyView:
    state = await _quotas(request).state(key.id)
    return KeyView.model_validate({**key.public(), "quota": state})


async def _known(request: web.Request) -> ApiKey:
    key_id = request.match_info["key_id"]
    with redis_errors("read the key"):
        key = await request.config_dict[API_KEYS].get(key_id)
    if key is None:
        raise NotFoundError(f"no key with id {key_id!r}")
    return key


def key_path(key_id: str) -> str:
    return f"/v1/admin/keys/{key_id}"


@routes.post("/v1/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    await authenticate(request)
    wanted = await parse_body(request, KeyCreate)
    limits = KeyLimits.model_validate(wanted.model_dump(include=set(LIMIT_NAMES)))
    with redis_errors("create the key"):
        try:
            token, key = await request.config_dict[API_KEYS].create(wanted.name, scopes=wanted.scopes)
        except ValueError as exc:
            raise ValidationError(f"name: {exc}") from exc
        try:
            await _quotas(request).set_limits(key.id, limits)
        except BaseException:  # a key must never live without the limits it was created with
            await request.config_dict[API_KEYS].revoke(key.id)
            raise
        view = await _view(request, key)
    assert key.webhook_secret is not None  # every new key has one
    created = KeyCreated(**view.model_dump(), key=token, webhook_secret=key.webhook_secret)
    return json_response(created.model_dump(mode="json"), status=201, headers={"Location": key_path(key.id)})


@routes.get("/v1/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    await authenticate(request)
    with redis_errors("list the keys"):
        keys = await request.config_dict[API_KEYS].list()
        views = [await _view(request, key) for key in sorted(keys, key=lambda key: key.created_at)]
    return json_response(KeyList(keys=views).model_dump(mode="json"))


@routes.get("/v1/admin/keys/{key_id}")
async def show_key(request: web.Request) -> web.Response:
    await authenticate(request)
    key = await _known(request)
    with redis_errors("read the key's quota"):
        view = await _view(request, key)
    return json_response(view.model_dump(mode="json"))


@routes.patch("/v1/admin/keys/{key_id}")
async def update_key(request: web.Request) -> web.Response:
    await authenticate(request)
    change = await parse_body(request, KeyUpdate)
    given = change.model_fields_set
    if not given:
        raise ValidationError(
            "nothing to change: give name, scopes, credits, add_credits, daily_limit, monthly_limit or"
            " max_concurrent"
        )
    if {"credits", "add_credits"} <= given:
        raise ValidationError("give credits (the new balance) or add_credits, not both")
    for field in ("name", "scopes", "add_credits"):
        if field in given and getattr(change, field) is None:
            raise ValidationError(f"{field} cannot be null")
    key = await _known(request)
    quotas = _quotas(request)
    with redis_errors("update the key"):
        if given & {"name", "scopes"}:
            try:
                updated = await request.config_dict[API_KEYS].update(
                    key.id, name=change.name, scopes=change.scopes
                )
            except ValueError as exc:  # a name of blanks only
                raise ValidationError(f"name: {exc}") from exc
            if updated is None:
                raise NotFoundError(f"no key with id {key.id!r}")
            key = updated
        limit_fields = given & set(LIMIT_NAMES)
        if limit_fields:
            limits = KeyLimits.model_validate(change.model_dump(include=set(LIMIT_NAMES)))
            await quotas.set_limits(key.id, limits, fields=limit_fields)
        if change.add_credits is not None:
            await quotas.add_credits(key.id, change.add_credits)
        view = await _view(request, key)
    return json_response(view.model_dump(mode="json"))


@routes.post("/v1/admin/keys/{key_id}/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    await authenticate(request)
    wanted = await parse_body(request, RotateRequest, required=False)
    key = await _known(request)
    with redis_errors("rotate the key"):
        rotation = await request.config_dict[API_KEYS].rotate(
            key.id, wanted.grace_seconds, webhook_secret=wanted.webhook_secret
        )
    if rotation is None:
        raise NotFoundError(f"no key with id {key.id!r}")
    rotated = Rotated(
        id=key.id,
        key=rotation.token,
        old_key_valid_until=rotation.old_valid_until,
        webhook_secret=rotation.key.webhook_secret if rotation.webhook_secret_rotated else None,
    )
    return json_response(rotated.model_dump(mode="json"))


@routes.delete("/v1/admin/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    await authenticate(request)
    key_id = request.match_info["key_id"]
    with redis_errors("revoke the key"):
        revoked = await request.config_dict[API_KEYS].revoke(key_id)
    if not revoked:
        raise NotFoundError(f"no key with id {key_id!r}")
    return web.Response(status=204)


@routes.get("/v1/admin/keys/{key_id}/export")
async def export_key(request: web.Request) -> web.Response:
    """Works for a revoked key too, while anything of it is held."""
    await authenticate(request)
    key_id = request.match_info["key_id"]
    with redis_errors("export the key's data"):
        document = await _accounts(request).export(key_id)
    if document is None:
        raise NotFoundError(f"nothing is held about a key with id {key_id!r}")
    disposition = f'attachment; filename="veil-key-{key_id}.json"'
    return json_response(document, headers={"Content-Disposition": disposition})


@routes.post("/v1/admin/keys/{key_id}/erase")
async def erase_key(request: web.Request) -> web.Response:
    """Revoke the key and delete everything held about it (a revoked key's data too)."""
    await authenticate(request)
    key_id = request.match_info["key_id"]
    with redis_errors("erase the key's data"):
        erasure = await _accounts(request).erase(key_id)
    if erasure is None:
        raise NotFoundError(f"nothing is held about a key with id {key_id!r}")
    return json_response(Erased.model_validate(erasure, from_attributes=True).model_dump(mode="json"))
