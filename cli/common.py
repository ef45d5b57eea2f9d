"""What the ``veil`` commands share: the data dir and the stack ``veil up`` runs from it, settings, API keys.

The commands (``keys``, ``eval``, ``bench``) import this; it imports none of them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from redis.exceptions import RedisError

from cli.stack import read_stack_file, stack_environment
from shared.apikeys import ApiKeyStore
from shared.redisconn import redis_client
from shared.redisurl import parse_redis_url
from shared.settings import Settings, load_settings

DEFAULT_DATA_DIR = Path(".veil")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def settings_for_cli(data_dir: Path) -> Settings:
    """Environment first; otherwise the stack that ``veil up`` is running from ``data_dir``."""
    for key, value in stack_environment(data_dir).items():
        os.environ.setdefault(key, value)
    return load_settings()


def stack_url(data_dir: Path) -> str | None:
    """The gateway URL of the stack ``veil up`` runs from ``data_dir``, if one does."""
    return read_stack_file(data_dir).get("url")


def with_key_store(settings: Settings, action: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    """Run ``action`` on the API key store in Redis; a click error when Redis cannot be reached."""
    try:
        parse_redis_url(settings.redis.url)
    except ValueError as exc:
        raise click.ClickException(f"VEIL_REDIS__URL: {exc}") from exc

    async def run() -> T:
        redis = redis_client(settings.redis.url)
        try:
            return await action(ApiKeyStore(redis, settings.redis.prefix))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except (ConnectionError, OSError, RedisError) as exc:
        raise click.ClickException(
            f"cannot reach Redis at {settings.redis.url} ({exc}); is `veil up` running?"
        ) from exc


def api_key_or_new(data_dir: Path, given: str | None, name: str) -> str:
    """``given``, else a new key named ``name`` in the stack ``veil up`` runs from ``data_dir``."""
    if given:
        return given
    if not read_stack_file(data_dir):
        raise click.ClickException(
            "no API key: pass --api-key or set VEIL_API_KEY (or run `veil up` in --data-dir)"
        )
    token, _key = with_key_store(settings_for_cli(data_dir), lambda store: store.create(name))
    return token


def api_key_option(help_text: str) -> Callable[[F], F]:
    """``--api-key``, also read from ``VEIL_API_KEY``."""
    return click.option("--api-key", envvar="VEIL_API_KEY", default=None, help=help_text)
