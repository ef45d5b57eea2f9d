"""How a VeilError becomes status, code and headers before any surface renders it."""

from __future__ import annotations

import pytest

from gateway.errors import ErrorInfo, retry_after_header
from shared.errors import QueueFullError, QueueUnavailableError, RateLimitedError, ValidationError


@pytest.mark.parametrize(("seconds", "header"), [(0.001, "1"), (1.0, "1"), (1.2, "2"), (30.0, "30")])
def test_retry_after_rounds_up_to_whole_seconds(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_transient_errors_say_when_to_retry() -> None:
    limited = ErrorInfo.from_veil_error(RateLimitedError("slow down", retry_after=2.5))
    assert (limited.status, limited.code, dict(limited.headers)) == (
        429,
        "RATE_LIMITED",
        {"Retry-After": "3"},
    )
    full = ErrorInfo.from_veil_error(QueueFullError("full", retry_after=5))
    assert (full.status, full.code, dict(full.headers)) == (503, "QUEUE_FULL", {"Retry-After": "5"})
    down = ErrorInfo.from_veil_error(QueueUnavailableError("down"))
    assert dict(down.headers) == {"Retry-After": "5"}  # any 503 without its own estimate
    assert dict(ErrorInfo.from_veil_error(ValidationError("bad")).headers) == {}
