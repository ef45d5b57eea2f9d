"""``python -m gateway``: read settings once from ``VEIL_*`` and serve on ``settings.gateway.host:port``
until SIGTERM / SIGINT, then drain (gateway/drain.py)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.app import create_app
from gateway.drain import serve
from shared.gcfreeze import freeze_startup_objects
from shared.logging import configure_logging
from shared.settings import load_settings

log = logging.getLogger("gateway")


async def _freeze_after_startup(app: web.Application) -> None:
    log.info("start-up objects frozen for the garbage collector: %d", freeze_startup_objects())


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # on_startup runs after the clean-up contexts have started: clients and pools exist by then.
    app.on_startup.append(_freeze_after_startup)
    asyncio.run(serve(app, settings))


if __name__ == "__main__":
    main()
