"""What ``VEIL_REDIS__URL`` names: one Redis server (redis-py's own URL forms), or a master found through
Redis Sentinel.

The Sentinel form is the one Celery/kombu users and the ``redis-sentinel-url`` package know::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db][?sentinel_password=...]

Ports default to Sentinel's 26379; ``user``/``password`` are the master's; the sentinels themselves are
asked without a password unless ``sentinel_password`` (and ``sentinel_username``) is given.
``rediss+sentinel://`` speaks TLS to the master. Pure parsing: no I/O, no redis-py import.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS to the master
DIRECT_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
SENTINEL_QUERY = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class DirectRedis:
    """One server: the URL as redis-py reads it (``redis://``, ``rediss://``, ``unix://``)."""

    url: str


@dataclass(frozen=True)
class SentinelRedis:
    """The master of ``service_name``, asked of the sentinels in order."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None


RedisTarget = DirectRedis | SentinelRedis


def parse_redis_url(url: str) -> RedisTarget:
    """The Redis ``url`` names; ValueError with what is wrong (never the password) otherwise."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError("a Redis URL starts with redis://, rediss://, unix:// or redis+sentinel://")
    scheme = scheme.lower()
    if scheme in DIRECT_SCHEMES:
        return DirectRedis(url)
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(
            f"unknown Redis URL scheme {scheme!r}: use redis://, rediss://, unix:// or redis+sentinel://"
        )
    return _parse_sentinel(url, ssl=SENTINEL_SCHEMES[scheme])


def _parse_sentinel(url: str, *, ssl: bool) -> SentinelRedis:
    # By hand: urllib's parsers expect one host:port (and say nothing useful about a bad one).
    rest = url.partition("://")[2].partition("#")[0]
    rest, _, query_text = rest.partition("?")
    netloc, _, path_text = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    sentinels = tuple(_host_port(item) for item in hosts.split(","))
    path = [segment for segment in path_text.split("/") if segment]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL names the master's service: redis+sentinel://host:26379/mymaster/0")
    service_name = unquote(path[0])
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"the database in a Sentinel URL is a number, not {path[1]!r}")
        db = int(path[1])
    query = parse_qs(query_text, keep_blank_values=True)
    unknown = sorted(set(query) - set(SENTINEL_QUERY))
    if unknown:
        raise ValueError(f"unknown Sentinel URL option(s) {', '.join(unknown)}: {', '.join(SENTINEL_QUERY)}")
    return SentinelRedis(
        sentinels=sentinels,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        ssl=ssl,
        sentinel_username=query.get("sentinel_username", [None])[-1] or None,
        sentinel_password=query.get("sentinel_password", [None])[-1] or None,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:  # redis://password@host is redis-py's reading of a lone userinfo too
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host_port(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad sentinel address {item!r} in the Redis URL")
        port_text = rest[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError("a Sentinel URL lists its sentinels as host:port,host:port")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port {port_text!r} in the Redis URL")
    return host, int(port_text)
