"""The gateway reads a body's media type from the header itself; it must agree with aiohttp's own parse
(through :mod:`email`) on every header a client sends, and still name what was sent when it is odd."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.inputs import media_type


@pytest.mark.parametrize(
    "header",
    [
        "multipart/form-data; boundary=----abc",
        'Multipart/Form-Data; boundary="x;y"',
        "multipart/form-data ; boundary=abc",
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "application/x-www-form-urlencoded",
        "image/jpeg",
    ],
)
def test_agrees_with_aiohttp(header: str) -> None:
    request = make_mocked_request("POST", "/v1/jobs", headers={"Content-Type": header})
    assert media_type(request) == request.content_type


def test_missing_header_is_octet_stream_as_in_aiohttp() -> None:
    request = make_mocked_request("POST", "/v1/jobs")
    assert media_type(request) == request.content_type == "application/octet-stream"


def test_a_malformed_type_is_reported_as_sent() -> None:
    # aiohttp would call this text/plain; the error message should show what the client sent.
    request = make_mocked_request("POST", "/v1/jobs", headers={"Content-Type": "jpeg"})
    assert media_type(request) == "jpeg"
