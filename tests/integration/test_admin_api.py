"""The admin API against the real gateway, Redis and SeaweedFS: only admin keys get in (403 for others, 401
for unknown ones), keys are created with their limits, listed, shown, updated, rotated (the old key works
during its grace, not after) and revoked; scopes hold across the native API; every bad input is a 400 (or
404) that says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from shared.apikeys import ApiKeyStore, Scope
from shared.settings import Settings
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration


async def _key(settings: Settings, *scopes: Scope) -> tuple[str, str]:
    redis = Redis.from_url(settings.redis.url)
    try:
        token, key = await ApiKeyStore(redis, settings.redis.prefix).create("admin-test", scopes=scopes)
    finally:
        await redis.aclose()
    return token, key.id


@pytest.fixture
async def admin(settings: Settings) -> dict[str, str]:
    token, _ = await _key(settings, Scope.ADMIN)
    return {"X-API-Key": token}


async def _create(client: GatewayClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/admin/keys", json={"name": "team", **body}, headers=admin)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _usage_status(client: GatewayClient, token: str) -> int:
    return (await client.get("/v1/usage", headers={"X-API-Key": token})).status


# -- who gets in ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/admin/keys"),
        ("GET", "/v1/admin/keys"),
        ("GET", "/v1/admin/keys/abc"),
        ("PATCH", "/v1/admin/keys/abc"),
        ("POST", "/v1/admin/keys/abc/rotate"),
        ("DELETE", "/v1/admin/keys/abc"),
        ("GET", "/v1/admin/keys/abc/export"),
        ("POST", "/v1/admin/keys/abc/erase"),
    ],
)
async def test_admin_endpoints_refuse_other_keys_and_unknown_ones(
    client: GatewayClient, auth: dict[str, str], method: str, path: str
) -> None:
    forbidden = await client.request(method, path, headers=auth, json={})
    assert forbidden.status == 403
    body = await forbidden.json()
    assert body["code"] == "FORBIDDEN"
    assert "'admin' scope" in body["message"]
    unknown = await client.request(method, path, headers={"X-API-Key": "veil_nope"}, json={})
    assert unknown.status == 401
    assert (await unknown.json())["code"] == "UNAUTHORIZED"
    missing = await client.request(method, path, json={})
    assert missing.status == 401


async def test_a_read_key_reads_but_cannot_submit(client: GatewayClient, settings: Settings) -> None:
    token, _ = await _key(settings, Scope.READ)
    headers = {"X-API-Key": token}
    refused = await client.post("/v1/jobs", json={"image_url": "https://example.com/a.jpg"}, headers=headers)
    assert refused.status == 403
    body = await refused.json()
    assert body == {
        "code": "FORBIDDEN",
        "message": "this API key lacks the 'submit' scope that POST /v1/jobs needs (its scopes: read)",
    }
    assert (await client.get("/v1/jobs/unknown", headers=headers)).status == 404  # read: allowed, not there
    assert (await client.delete("/v1/jobs/unknown", headers=headers)).status == 403
    assert await _usage_status(client, token) == 200


async def test_a_submit_only_key_cannot_read(client: GatewayClient, settings: Settings) -> None:
    token, _ = await _key(settings, Scope.SUBMIT)
    response = await client.get("/v1/jobs/unknown", headers={"X-API-Key": token})
    assert response.status == 403
    assert "'read' scope" in (await response.json())["message"]


# -- lifecycle --------------------------------------------------------------------------------------------


async def test_create_list_show_update_and_revoke(client: GatewayClient, admin: dict[str, str]) -> None:
    created = await _create(client, admin, scopes=["read"], credits=5, daily_limit=100, max_concurrent=2)
    assert created["key"].startswith("veil_")
    assert created["webhook_secret"].startswith("whsec_")
    assert created["scopes"] == ["read"]
    assert created["quota"]["limits"] == {
        "credits": 5,
        "daily_limit": 100,
        "monthly_limit": None,
        "max_concurrent": 2,
    }
    assert created["quota"]["credits_left"] == 5
    key_id = created["id"]
    assert await _usage_status(client, created["key"]) == 200

    listing = await (await client.get("/v1/admin/keys", headers=admin)).json()
    listed = next(item for item in listing["keys"] if item["id"] == key_id)
    assert "key" not in listed and "webhook_secret" not in listed
    assert listed["quota"]["credits_left"] == 5

    shown = await (await client.get(f"/v1/admin/keys/{key_id}", headers=admin)).json()
    assert shown["name"] == "team"
    assert shown["quota"]["used_today"] == 0

    patch = {"name": "claims", "scopes": ["submit", "read"], "add_credits": 3, "daily_limit": None}
    patched = await client.patch(f"/v1/admin/keys/{key_id}", json=patch, headers=admin)
    assert patched.status == 200, await patched.text()
    view = await patched.json()
    assert (view["name"], view["scopes"]) == ("claims", ["submit", "read"])
    assert view["quota"]["credits_left"] == 8
    assert view["quota"]["limits"]["daily_limit"] is None
    assert view["quota"]["limits"]["max_concurrent"] == 2  # not given: unchanged
    again = await client.patch(f"/v1/admin/keys/{key_id}", json={"credits": None}, headers=admin)
    assert (await again.json())["quota"]["credits_left"] is None  # no credit limit any more

    assert (await client.delete(f"/v1/admin/keys/{key_id}", headers=admin)).status == 204
    assert await _usage_status(client, created["key"]) == 401
    gone = await client.delete(f"/v1/admin/keys/{key_id}", headers=admin)
    assert gone.status == 404
    assert await gone.json() == {"code": "NOT_FOUND", "message": f"no key with id '{key_id}'"}


async def test_a_rotated_key_works_during_its_grace_and_not_after(
    client: GatewayClient, admin: dict[str, str]
) -> None:
    created = await _create(client, admin)
    key_id, first = created["id"], created["key"]
    rotated = await client.post(
        f"/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": 3600}, headers=admin
    )
    assert rotated.status == 200
    second = await rotated.json()
    assert second["id"] == key_id
    assert second["old_key_valid_until"] is not None
    assert second["webhook_secret"] is None  # not asked for
    assert await _usage_status(client, first) == 200  # in its grace period
    assert await _usage_status(client, second["key"]) == 200
    # The next rotation ends the grace at once: the first key stays valid (its own grace), the second not.
    third = await (
        await client.post(
            f"/v1/admin/keys/{key_id}/rotate",
            json={"grace_seconds": 0, "webhook_secret": True},
            headers=admin,
        )
    ).json()
    assert third["old_key_valid_until"] is None
    assert third["webhook_secret"].startswith("whsec_")
    assert await _usage_status(client, second["key"]) == 401
    assert await _usage_status(client, third["key"]) == 200
    # Revoking ends every grace period.
    assert (await client.delete(f"/v1/admin/keys/{key_id}", headers=admin)).status == 204
    assert await _usage_status(client, first) == 401
    assert await _usage_status(client, third["key"]) == 401


async def test_a_rotation_without_a_body_has_an_hour_of_grace(
    client: GatewayClient, admin: dict[str, str]
) -> None:
    created = await _create(client, admin)
    response = await client.post(f"/v1/admin/keys/{created['id']}/rotate", headers=admin)
    assert response.status == 200
    assert (await response.json())["old_key_valid_until"] is not None
    assert await _usage_status(client, created["key"]) == 200


# -- bad input --------------------------------------------------------------------------------------------

BAD_CREATES: list[tuple[object, str]] = [
    ({}, "name: Field required"),
    ({"name": ""}, "name: String should have at least 1 character"),
    ({"name": "x" * 201}, "name: String should have at most 200 characters"),
    ({"name": "a\nb"}, "name: name must not contain control characters"),
    ({"name": "  "}, "name: name must be 1 to 200 characters"),
    ({"name": "n", "scopes": []}, "scopes: List should have at least 1 item"),
    ({"name": "n", "scopes": ["owner"]}, "scopes.0: Input should be 'submit', 'read' or 'admin'"),
    ({"name": "n", "scopes": "read"}, "scopes: Input should be a valid list"),
    ({"name": "n", "credits": -1}, "credits: Input should be greater than or equal to 0"),
    ({"name": "n", "credits": "5"}, "credits: Input should be a valid integer"),
    ({"name": "n", "daily_limit": 1.5}, "daily_limit: Input should be a valid integer"),
    ({"name": "n", "max_concurrent": True}, "max_concurrent: Input should be a valid integer"),
    ({"name": "n", "monthly_limit": 10**13}, "monthly_limit: Input should be less than or equal to"),
    ({"name": "n", "owner": "x"}, "owner: Extra inputs are not permitted"),
    (["name"], "the body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_CREATES)
async def test_bad_creates_are_400s_that_say_why(
    client: GatewayClient, admin: dict[str, str], body: object, message: str
) -> None:
    response = await client.post("/v1/admin/keys", json=body, headers=admin)
    assert response.status == 400
    answer = await response.json()
    assert answer["code"] == "VALIDATION_ERROR"
    assert message in answer["message"]


@pytest.mark.parametrize(
    ("data", "headers", "message"),
    [
        ("{", {"Content-Type": "application/json"}, "the body is not valid JSON"),
        ("name=x", {"Content-Type": "application/x-www-form-urlencoded"}, "takes a JSON body"),
        ("", {"Content-Type": "application/json"}, "the body is not valid JSON"),
    ],
)
async def test_bodies_that_are_not_json_objects_are_400s(
    client: GatewayClient, admin: dict[str, str], data: str, headers: dict[str, str], message: str
) -> None:
    response = await client.post("/v1/admin/keys", data=data, headers={**admin, **headers})
    assert response.status == 400
    assert message in (await response.json())["message"]


BAD_UPDATES: list[tuple[object, str]] = [
    ({}, "nothing to change"),
    ({"credits": 1, "add_credits": 1}, "not both"),
    ({"name": None}, "name cannot be null"),
    ({"name": "   "}, "name: name must be 1 to 200 characters"),
    ({"scopes": None}, "scopes cannot be null"),
    ({"add_credits": None}, "add_credits cannot be null"),
    ({"add_credits": "1"}, "add_credits: Input should be a valid integer"),
    ({"scopes": ["read", "root"]}, "scopes.1: Input should be 'submit', 'read' or 'admin'"),
    ({"daily_limit": -3}, "daily_limit: Input should be greater than or equal to 0"),
    ({"expires_at": "2030-01-01"}, "expires_at: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("body", "message"), BAD_UPDATES)
async def test_bad_updates_are_400s_that_say_why(
    client: GatewayClient, admin: dict[str, str], body: object, message: str
) -> None:
    created = await _create(client, admin)
    response = await client.patch(f"/v1/admin/keys/{created['id']}", json=body, headers=admin)
    assert response.status == 400
    assert message in (await response.json())["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"grace_seconds": -1}, "grace_seconds: Input should be greater than or equal to 0"),
        ({"grace_seconds": 604801}, "grace_seconds: Input should be less than or equal to 604800"),
        ({"grace_seconds": "60"}, "grace_seconds: Input should be a valid integer"),
        ({"webhook_secret": "yes"}, "webhook_secret: Input should be a valid boolean"),
        ({"grace": 60}, "grace: Extra inputs are not permitted"),
    ],
)
async def test_bad_rotations_are_400s_that_say_why(
    client: GatewayClient, admin: dict[str, str], body: object, message: str
) -> None:
    created = await _create(client, admin)
    response = await client.post(f"/v1/admin/keys/{created['id']}/rotate", json=body, headers=admin)
    assert response.status == 400
    assert message in (await response.json())["message"]
    assert await _usage_status(client, created["key"]) == 200  # nothing rotated


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("POST", "/rotate", {}),
        ("DELETE", "", None),
        ("GET", "/export", None),
        ("POST", "/erase", None),
    ],
)
async def test_unknown_ids_are_404s(
    client: GatewayClient, admin: dict[str, str], method: str, suffix: str, body: object
) -> None:
    response = await client.request(
        method, f"/v1/admin/keys/0123456789abcdef{suffix}", json=body, headers=admin
    )
    assert response.status == 404
    answer = await response.json()
    assert answer["code"] == "NOT_FOUND"
    assert "0123456789abcdef" in answer["message"]


async def test_unknown_methods_under_admin_are_405s(client: GatewayClient, admin: dict[str, str]) -> None:
    response = await client.put("/v1/admin/keys", headers=admin)
    assert response.status == 405
