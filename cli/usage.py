"""``veil usage``: use per key per UTC day, straight from Redis (shared/usage.py), as a table, and as CSV
with ``--csv``: the same figures and checks as ``GET /v1/usage`` (shared/usagereport.py)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.common import settings_for_cli, with_key_store
from cli.keys import table
from shared.apikeys import ApiKeyStore
from shared.errors import ValidationError
from shared.usage import UsageDay, UsageStore
from shared.usagereport import UsageReport, date_range, report

COLUMNS = ["day", "key_id", "submitted", "succeeded", "failed", "faces", "plates", "megapixels", "credits"]


def _cells(day: UsageDay) -> list[str]:
    return [
        day.day.isoformat(),
        day.key_id,
        str(day.submitted),
        str(day.succeeded),
        str(day.failed),
        str(day.detections.get("face", 0)),
        str(day.detections.get("plate", 0)),
        f"{day.megapixels:g}",
        str(day.credits),
    ]


def render(found: UsageReport) -> str:
    totals = found.totals
    total = [
        "total",
        "",
        str(totals.submitted),
        str(totals.succeeded),
        str(totals.failed),
        str(totals.detections.get("face", 0)),
        str(totals.detections.get("plate", 0)),
        f"{totals.megapixels:g}",
        str(totals.credits),
    ]
    header = [column.upper().replace("_", " ") for column in COLUMNS]
    return table(header, [*(_cells(day) for day in found.days), total])


def write_csv(found: UsageReport, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(_cells(day) for day in found.days)


@click.command()
@click.option("--key", "key_id", default=None, help="One key's usage (default: every live key's).")
@click.option(
    "--from", "start", default=None, metavar="YYYY-MM-DD", help="First day (default: 30 days in all)."
)
@click.option(
    "--to", "end", default=None, metavar="YYYY-MM-DD", help="Last day, inclusive (default: today, UTC)."
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write CSV."
)
@click.pass_obj
def usage(
    data_dir: Path, key_id: str | None, start: str | None, end: str | None, csv_path: Path | None
) -> None:
    """Use per key per UTC day: images submitted, succeeded and failed, detections, megapixels, credits."""
    try:
        first, last = date_range(start, end, datetime.now(UTC).date())
    except ValidationError as exc:
        raise click.BadParameter(exc.message) from exc

    async def gather(store: ApiKeyStore) -> UsageReport:
        ids = [key_id] if key_id is not None else sorted(key.id for key in await store.list())
        return await report(UsageStore(store.redis, store.prefix), ids, first, last)

    found = with_key_store(settings_for_cli(data_dir), gather)
    click.echo(f"usage from {first} to {last} (UTC days)", err=True)
    click.echo(render(found))
    if csv_path is not None:
        write_csv(found, csv_path)
        click.echo(f"wrote {len(found.days)} rows to {csv_path}", err=True)
