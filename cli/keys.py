"""``veil keys``: keys as accounts, straight in Redis (the ``veil up`` stack in ``--data-dir``, or the
``VEIL_*`` settings), like the admin API: create (with scopes and limits), list (with their use), show,
update, rotate, revoke, and the privacy requests, export and erase (shared/accounts.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from cli.common import settings_for_cli, with_key_store
from shared.apikeys import DEFAULT_SCOPES, MAX_GRACE_SECONDS, ApiKey, ApiKeyStore, Scope, parse_scopes
from shared.errors import VeilError
from shared.quotas import KeyLimits, QuotaState, QuotaStore

NONE_WORDS = frozenset({"none", "off", "unlimited"})


class Unlimited:
    """``--daily-limit none``: remove the limit (``update``); a separate value from "not given"."""

    def __repr__(self) -> str:
        return "none"


UNLIMITED = Unlimited()


class LimitType(click.ParamType[int | Unlimited]):
    """A whole number ≥ 0, or ``none`` to remove the limit."""

    name = "N|none"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | Unlimited:
        if isinstance(value, int | Unlimited):
            return value
        text = str(value).strip().lower()
        if text in NONE_WORDS:
            return UNLIMITED
        if not text.isdigit():
            self.fail(f"{value!r} is not a whole number ≥ 0 (or none)", param, ctx)
        return int(text)


class ScopesType(click.ParamType[tuple[Scope, ...]]):
    name = "submit,read,admin"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[Scope, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_scopes(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LIMIT = LimitType()
SCOPES = ScopesType()


def limit_options(func: Any) -> Any:
    for name, text in reversed(
        [
            ("--credits", "Credit balance (one per processed image); none: no credit limit."),
            ("--daily-limit", "Accepted submissions per UTC day; none: no cap."),
            ("--monthly-limit", "Accepted submissions per UTC month; none: no cap."),
            ("--max-concurrent", "Jobs queued or running at once; none: no cap."),
        ]
    ):
        func = click.option(name, type=LIMIT, default=None, help=text)(func)
    return func


def _limits(given: dict[str, int | Unlimited | None]) -> tuple[KeyLimits, set[str]]:
    """The limits named on the command line (``none`` as null) and which ones were named."""
    chosen = {name: value for name, value in given.items() if value is not None}
    values = {name: None if isinstance(value, Unlimited) else value for name, value in chosen.items()}
    return KeyLimits.model_validate(values), set(chosen)


def _fail(exc: Exception) -> click.ClickException:
    message = exc.message if isinstance(exc, VeilError) else str(exc)
    return click.ClickException(message)


def _cap(used: int, cap: int | None) -> str:
    return f"{used}" if cap is None else f"{used}/{cap}"


def _row(key: ApiKey, state: QuotaState) -> list[str]:
    credits = "-" if state.credits_left is None else str(state.credits_left)
    return [
        key.id,
        key.name,
        ",".join(key.scopes),
        credits,
        _cap(state.used_today, state.limits.daily_limit),
        _cap(state.used_month, state.limits.monthly_limit),
        _cap(state.in_flight, state.limits.max_concurrent),
        key.created_at[:19],
        key.expires_at[:19] if key.expires_at else "-",
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    """Columns aligned with two spaces between them."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _describe(key: ApiKey, state: QuotaState) -> str:
    limits = state.limits
    credits = "no credit limit" if state.credits_left is None else f"{state.credits_left} credits left"
    lines = [
        f"id:          {key.id}",
        f"name:        {key.name}",
        f"scopes:      {', '.join(key.scopes)}",
        f"created:     {key.created_at}",
        f"rotated:     {key.rotated_at or '-'}",
        f"expires:     {key.expires_at or '-'}",
        f"credits:     {credits}",
        f"today:       {_cap(state.used_today, limits.daily_limit)} submissions",
        f"this month:  {_cap(state.used_month, limits.monthly_limit)} submissions",
        f"in flight:   {_cap(state.in_flight, limits.max_concurrent)} jobs",
    ]
    return "\n".join(lines)


@click.group()
def keys() -> None:
    """Manage API keys: accounts with scopes, credits and caps (stored hashed in Redis)."""


@keys.command("create")
@click.option("--name", required=True, help="A label for the key (who or what uses it).")
@click.option(
    "--scopes",
    type=SCOPES,
    default=",".join(DEFAULT_SCOPES),
    show_default=True,
    help="What it may do: submit (jobs), read (GET), admin (/v1/admin/…, every key's usage).",
)
@limit_options
@click.pass_obj
def keys_create(
    data_dir: Path, /, name: str, scopes: tuple[Scope, ...], **limits: int | Unlimited | None
) -> None:
    """Create a key; the key itself is the last line printed (shown once, stored hashed)."""
    chosen, _ = _limits(limits)

    async def create(store: ApiKeyStore) -> tuple[str, ApiKey]:
        token, key = await store.create(name, scopes=scopes)
        try:
            await QuotaStore(store.redis, store.prefix).set_limits(key.id, chosen)
        except BaseException:  # never a key without the limits it was created with
            await store.revoke(key.id)
            raise
        return token, key

    try:
        token, key = with_key_store(settings_for_cli(data_dir), create)
    except ValueError as exc:
        raise _fail(exc) from exc
    click.echo(f"Created key {key.id} ({key.name}); webhook signing secret: {key.webhook_secret}", err=True)
    click.echo("The key is shown only once:", err=True)
    click.echo(token)


@keys.command("list")
@click.pass_obj
def keys_list(data_dir: Path) -> None:
    """List keys with their use: credits left, submissions today and this month (of their caps)."""

    async def listing(store: ApiKeyStore) -> list[list[str]]:
        quotas = QuotaStore(store.redis, store.prefix)
        found = sorted(await store.list(), key=lambda key: key.created_at)
        return [_row(key, await quotas.state(key.id)) for key in found]

    rows = with_key_store(settings_for_cli(data_dir), listing)
    header = ["ID", "NAME", "SCOPES", "CREDITS", "TODAY", "MONTH", "IN FLIGHT", "CREATED", "EXPIRES"]
    click.echo(table(header, rows))


@keys.command("show")
@click.argument("key_id")
@click.pass_obj
def keys_show(data_dir: Path, key_id: str) -> None:
    """A key's record, limits and use."""

    async def show(store: ApiKeyStore) -> tuple[ApiKey, QuotaState] | None:
        key = await store.get(key_id)
        return None if key is None else (key, await QuotaStore(store.redis, store.prefix).state(key_id))

    found = with_key_store(settings_for_cli(data_dir), show)
    if found is None:
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(_describe(*found))


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None, help="A new label.")
@click.option("--scopes", type=SCOPES, default=None, help="The new scopes (all of them).")
@click.option("--add-credits", type=int, default=None, help="Add to the balance (negative: take).")
@limit_options
@click.pass_obj
def keys_update(
    data_dir: Path,
    /,
    key_id: str,
    name: str | None,
    scopes: tuple[Scope, ...] | None,
    add_credits: int | None,
    **limits: int | Unlimited | None,
) -> None:
    """Change a key's name, scopes, credits or caps; `none` removes a limit."""
    chosen, fields = _limits(limits)
    if add_credits is not None and "credits" in fields:
        raise click.UsageError("give --credits (the new balance) or --add-credits, not both")
    if name is None and scopes is None and add_credits is None and not fields:
        raise click.UsageError(
            "nothing to change: give --name, --scopes, --credits, --add-credits or a limit"
        )

    async def update(store: ApiKeyStore) -> tuple[ApiKey, QuotaState] | None:
        key = await store.get(key_id)
        if key is None:
            return None
        if name is not None or scopes is not None:
            updated = await store.update(key_id, name=name, scopes=scopes)
            if updated is None:
                return None
            key = updated
        quotas = QuotaStore(store.redis, store.prefix)
        if fields:
            await quotas.set_limits(key_id, chosen, fields=fields)
        if add_credits is not None:
            await quotas.add_credits(key_id, add_credits)
        return key, await quotas.state(key_id)

    try:
        found = with_key_store(settings_for_cli(data_dir), update)
    except ValueError as exc:
        raise _fail(exc) from exc
    if found is None:
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(_describe(*found))


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    type=click.IntRange(0, MAX_GRACE_SECONDS),
    default=3600,
    show_default=True,
    help="Seconds the old key keeps working (0: it stops now).",
)
@click.option("--webhook-secret", is_flag=True, help="Replace the webhook signing secret too (at once).")
@click.pass_obj
def keys_rotate(data_dir: Path, key_id: str, grace: int, webhook_secret: bool) -> None:
    """A new key for the same account (jobs, usage, limits stay); the new key is the last line printed."""
    rotation = with_key_store(
        settings_for_cli(data_dir), lambda store: store.rotate(key_id, grace, webhook_secret=webhook_secret)
    )
    if rotation is None:
        raise click.ClickException(f"no key with id {key_id}")
    until = rotation.old_valid_until
    click.echo(
        f"Rotated key {key_id}; the old key {'works until ' + until if until else 'no longer works'}",
        err=True,
    )
    if rotation.webhook_secret_rotated:
        click.echo(f"New webhook signing secret: {rotation.key.webhook_secret}", err=True)
    click.echo("The new key is shown only once:", err=True)
    click.echo(rotation.token)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(data_dir: Path, key_id: str) -> None:
    """Revoke a key by its id (its data stays until erased or expired)."""
    if not with_key_store(settings_for_cli(data_dir), lambda store: store.revoke(key_id)):
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked {key_id}")


@keys.command("export")
@click.argument("key_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write it here.")
@click.pass_obj
def keys_export(data_dir: Path, key_id: str, out: Path | None) -> None:
    """Everything Veil holds about a key (revoked ones too), as one JSON document."""
    from shared.accounts import Accounts  # boto3 and the rest: only for the commands that need them
    from shared.storage import ObjectStore

    settings = settings_for_cli(data_dir)
    store = ObjectStore(settings.s3)
    document = with_key_store(settings, lambda keys: Accounts(keys, store).export(key_id))
    if document is None:
        raise click.ClickException(f"nothing is held about a key with id {key_id}")
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    if out is None:
        sys.stdout.buffer.write(data + b"\n")
        return
    out.write_bytes(data + b"\n")
    click.echo(
        f"wrote {len(document['jobs'])} jobs and {len(document['usage'])} days of usage to {out}", err=True
    )


@keys.command("erase")
@click.argument("key_id")
@click.option("--yes", is_flag=True, help="Really delete everything held about the key.")
@click.pass_obj
def keys_erase(data_dir: Path, key_id: str, yes: bool) -> None:
    """Revoke a key and delete everything held about it: job records, usage, limits, deliveries and the
    objects still in Veil's bucket. One audit line (key id, time, counts) is kept."""
    if not yes:
        raise click.UsageError(f"erasing deletes everything held about {key_id} for good: add --yes")
    from shared.accounts import Accounts  # boto3 and the rest: only for the commands that need them
    from shared.storage import ObjectStore

    settings = settings_for_cli(data_dir)
    store = ObjectStore(settings.s3)
    try:
        erasure = with_key_store(settings, lambda keys: Accounts(keys, store).erase(key_id))
    except VeilError as exc:
        raise _fail(exc) from exc
    if erasure is None:
        raise click.ClickException(f"nothing is held about a key with id {key_id}")
    click.echo(
        f"erased {key_id}: {erasure.jobs} jobs, {erasure.bulk_jobs} bulk jobs, {erasure.deliveries} webhook"
        f" deliveries, {erasure.objects} objects, {erasure.redis_keys} Redis keys"
        + ("; the key is revoked" if erasure.key_revoked else "")
    )
