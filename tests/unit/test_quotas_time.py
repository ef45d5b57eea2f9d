"""When a quota lifts: the next UTC day, the next UTC month (December into January too)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.quotas import KeyLimits, month_of, seconds_to_next_day, seconds_to_next_month


@pytest.mark.parametrize(
    ("now", "day", "month"),
    [
        (datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC), 30, 30),
        (datetime(2026, 12, 31, 0, 0, tzinfo=UTC), 86_400, 86_400),
        (datetime(2026, 2, 1, 0, 0, tzinfo=UTC), 86_400, 28 * 86_400),
    ],
)
def test_time_until_a_cap_lifts(now: datetime, day: float, month: float) -> None:
    assert seconds_to_next_day(now) == day
    assert seconds_to_next_month(now) == month


def test_month_names_and_limits_are_checked() -> None:
    assert month_of(datetime(2026, 1, 9, tzinfo=UTC).date()) == "2026-01"
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        KeyLimits(daily_limit=-1)
