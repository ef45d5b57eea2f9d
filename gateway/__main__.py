"""``python -m gateway``: read settings once from ``VEIL_*`` and serve on ``settings.gateway.host:port``."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.app import create_app
from shared.settings import load_settings


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    web.run_app(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port,
        access_log_format='%a "%r" %s %b %Tfs',
    )


if __name__ == "__main__":
    main()
