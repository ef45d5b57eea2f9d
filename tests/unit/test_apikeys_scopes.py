"""The scope each request needs (one rule, from the method and path), what each key's scopes allow, and the
usage range every surface checks the same way."""

from __future__ import annotations

from datetime import date

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.auth import authorize, required_scope
from shared.apikeys import ApiKey, Scope
from shared.errors import ForbiddenError, ValidationError
from shared.usagereport import date_range


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v1/jobs/abc", Scope.READ),
        ("HEAD", "/v1/jobs/abc/result", Scope.READ),
        ("GET", "/v1/usage", Scope.READ),
        ("GET", "/info/", Scope.READ),
        ("POST", "/v1/jobs", Scope.SUBMIT),
        ("DELETE", "/v1/jobs/abc", Scope.SUBMIT),
        ("POST", "/v1/jobs/abc/deliveries", Scope.SUBMIT),
        ("POST", "/api/anonymize", Scope.SUBMIT),
        ("POST", "/plateblurer.aspx", Scope.SUBMIT),
        ("GET", "/v1/admin/keys", Scope.ADMIN),
        ("DELETE", "/v1/admin/keys/abc", Scope.ADMIN),
        ("POST", "/v1/admin/keys/abc/erase", Scope.ADMIN),
        ("GET", "/v1/admin", Scope.ADMIN),
        ("GET", "/v1/administrators", Scope.READ),  # a prefix of the word is not the admin API
    ],
)
def test_one_rule_names_the_scope_of_every_request(method: str, path: str, scope: Scope) -> None:
    assert required_scope(make_mocked_request(method, path)) is scope


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ((Scope.SUBMIT, Scope.READ), {Scope.SUBMIT, Scope.READ}),
        ((Scope.READ,), {Scope.READ}),
        ((Scope.SUBMIT,), {Scope.SUBMIT}),
        ((Scope.ADMIN,), {Scope.ADMIN, Scope.READ}),  # admin includes read, not submit
    ],
)
def test_what_each_set_of_scopes_allows(scopes: tuple[Scope, ...], allowed: set[Scope]) -> None:
    key = ApiKey(id="k", name="n", scopes=scopes)
    assert {scope for scope in Scope if key.allows(scope)} == allowed


def test_a_key_without_the_scope_is_forbidden_with_a_message_naming_it() -> None:
    key = ApiKey(id="k", name="n", scopes=(Scope.READ,))
    assert authorize(make_mocked_request("GET", "/v1/jobs/x"), key) is key
    with pytest.raises(ForbiddenError) as raised:
        authorize(make_mocked_request("POST", "/v1/admin/keys"), key)
    assert raised.value.code == "FORBIDDEN"
    assert raised.value.message == (
        "this API key lacks the 'admin' scope that POST /v1/admin/keys needs (its scopes: read)"
    )


def test_usage_ranges_default_to_thirty_days_and_allow_a_leap_year() -> None:
    today = date(2026, 3, 1)
    assert date_range(None, None, today) == (date(2026, 1, 31), today)
    assert date_range("2024-01-01", "2024-12-31", today) == (date(2024, 1, 1), date(2024, 12, 31))
    with pytest.raises(ValidationError, match="spans 367 days"):
        date_range("2024-01-01", "2025-01-01", today)
