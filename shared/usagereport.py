"""A usage report over a range of UTC days: the range checked the same way everywhere (``GET /v1/usage``,
``veil usage``), the days gathered per key and totalled."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta

from pydantic import BaseModel, Field

from shared.errors import ValidationError
from shared.usage import UsageDay, UsageStore

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class UsageTotals(BaseModel):
    submitted: int
    succeeded: int
    failed: int
    detections: dict[str, int] = Field(description="Detections by class, e.g. face, plate.")
    megapixels: float
    credits: int


class UsageReport(BaseModel):
    from_: date = Field(alias="from")
    to: date
    days: list[UsageDay] = Field(description="Each day a key was used, oldest first (then by key id).")
    totals: UsageTotals


def parse_day(name: str, value: str) -> date:
    """A ``YYYY-MM-DD`` day; :class:`ValidationError` naming ``name`` otherwise."""
    if not _DAY.fullmatch(value):
        raise ValidationError(f"{name} must be a date as YYYY-MM-DD, not {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{name} is not a real date: {value!r} ({exc})") from exc


def date_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """``from`` and ``to`` (inclusive): ``to`` defaults to today, ``from`` to 30 days in all; at most 366."""
    last = parse_day("to", end) if end is not None else today
    first = parse_day("from", start) if start is not None else last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise ValidationError(f"from ({first}) is after to ({last})")
    span = (last - first).days + 1
    if span > MAX_RANGE_DAYS:
        raise ValidationError(f"the range spans {span} days; at most {MAX_RANGE_DAYS}")
    return first, last


def totals(days: Iterable[UsageDay]) -> UsageTotals:
    chosen = list(days)
    detections: Counter[str] = Counter()
    for day in chosen:
        detections.update(day.detections)
    return UsageTotals(
        submitted=sum(day.submitted for day in chosen),
        succeeded=sum(day.succeeded for day in chosen),
        failed=sum(day.failed for day in chosen),
        detections=dict(sorted(detections.items())),
        megapixels=round(sum(day.megapixels for day in chosen), 3),
        credits=sum(day.credits for day in chosen),
    )


async def report(usage: UsageStore, key_ids: Iterable[str], first: date, last: date) -> UsageReport:
    """The keys' days in the range, by day then key, and their totals."""
    days = [day for key_id in key_ids for day in await usage.days(key_id, first, last)]
    days.sort(key=lambda day: (day.day, day.key_id))
    return UsageReport.model_validate({"from": first, "to": last, "days": days, "totals": totals(days)})
