"""The ``veil`` command: ``up``, ``keys``, ``usage``, ``submit``, and the role entry points ``gateway`` /
``worker``.

Heavy imports (the worker's inference stack) happen inside the commands that need them, so
``veil keys`` stays fast and a gateway-only install can still run it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.bench import bench
from cli.blur import blur
from cli.common import DEFAULT_DATA_DIR
from cli.evaluate import evaluate
from cli.keys import keys
from cli.stack import run_up
from cli.usage import usage


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


main.add_command(keys)
main.add_command(usage)
main.add_command(evaluate, "eval")
main.add_command(bench)
main.add_command(blur)

if __name__ == "__main__":
    main()
