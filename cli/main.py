"""The ``veil`` command: ``up``, ``keys``, ``submit``, and the role entry points ``gateway`` / ``worker``.

Heavy imports (the worker's inference stack) happen inside the commands that need them, so
``veil keys`` stays fast and a gateway-only install can still run it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.bench import bench
from cli.blur import blur
from cli.common import DEFAULT_DATA_DIR, settings_for_cli, with_key_store
from cli.evaluate import evaluate
from cli.stack import run_up


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Where `veil up` keeps Redis and SeaweedFS data and logs.",
)
@click.pass_context
def main(ctx: click.Context, data_dir: Path) -> None:
    """Veil: find faces and licence plates in photos and blur them."""
    ctx.obj = data_dir


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.pass_obj
def up(data_dir: Path, host: str, port: int) -> None:
    """Run the whole stack on this machine (Redis, SeaweedFS, gateway, worker) until Ctrl-C."""
    sys.exit(run_up(data_dir.resolve(), host, port))


@main.command()
def gateway() -> None:
    """Run the HTTP gateway (settings from VEIL_* variables)."""
    from gateway.__main__ import main as gateway_main

    gateway_main()


@main.command()
def worker() -> None:
    """Run a worker (settings from VEIL_* variables)."""
    from workers.main import main as worker_main

    worker_main()


@main.group()
def keys() -> None:
    """Manage API keys (stored hashed in Redis)."""


@keys.command("create")
@click.option("--name", required=True, help="A label for the key (who or what uses it).")
@click.pass_obj
def keys_create(data_dir: Path, name: str) -> None:
    """Create a key; the key itself is the last line printed (shown once, stored hashed)."""
    token, key = with_key_store(settings_for_cli(data_dir), lambda store: store.create(name))
    click.echo(f"Created key {key.id} ({key.name}); webhook signing secret: {key.webhook_secret}", err=True)
    click.echo("The key is shown only once:", err=True)
    click.echo(token)


@keys.command("list")
@click.pass_obj
def keys_list(data_dir: Path) -> None:
    """List keys (ids and names; never the keys); short-lived keys (the demo's) with their expiry."""
    for key in with_key_store(settings_for_cli(data_dir), lambda store: store.list()):
        expires = f"\texpires {key.expires_at}" if key.expires_at is not None else ""
        click.echo(f"{key.id}\t{key.name}\t{key.created_at}{expires}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(data_dir: Path, key_id: str) -> None:
    """Revoke a key by its id."""
    if not with_key_store(settings_for_cli(data_dir), lambda store: store.revoke(key_id)):
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked {key_id}")


main.add_command(evaluate, "eval")
main.add_command(bench)
main.add_command(blur)

if __name__ == "__main__":
    main()
