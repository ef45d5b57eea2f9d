"""``VEIL_REDIS__URL``: one server as redis-py reads it, or a master behind Redis Sentinel, read the same by
every client Veil makes (shared/redisurl.py, shared/redisconn.py). No server is contacted here."""

from __future__ import annotations

import re

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from shared.queue import arq_redis_settings, queue_client
from shared.redisconn import redis_pool
from shared.redisurl import SENTINEL_PORT, DirectRedis, SentinelRedis, parse_redis_url
from shared.settings import RedisSettings


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@redis.example.com:6380/2", "unix:///run/redis.sock"]
)
def test_a_single_server_url_is_left_to_redis_py(url: str) -> None:
    assert parse_redis_url(url) == DirectRedis(url)


def test_a_sentinel_url_lists_its_sentinels_the_service_and_the_database() -> None:
    target = parse_redis_url("redis+sentinel://:s3cret@10.0.0.1:26379,sentinel-b,[::1]:26380/mymaster/3")
    assert target == SentinelRedis(
        sentinels=(("10.0.0.1", 26379), ("sentinel-b", SENTINEL_PORT), ("::1", 26380)),
        service_name="mymaster",
        db=3,
        password="s3cret",
    )


def test_a_sentinel_url_defaults_to_database_0_and_reads_user_tls_and_sentinel_credentials() -> None:
    target = parse_redis_url(
        "rediss+sentinel://veil:p%40ss@s1:26379/cache?sentinel_username=mon&sentinel_password=sp"
    )
    assert isinstance(target, SentinelRedis)
    assert (target.db, target.username, target.password, target.ssl) == (0, "veil", "p@ss", True)
    assert (target.sentinel_username, target.sentinel_password) == ("mon", "sp")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("127.0.0.1:6379", "starts with redis://"),
        ("http://127.0.0.1:6379/0", "unknown Redis URL scheme 'http'"),
        ("redis+sentinel://s1:26379", "names the master's service"),
        ("redis+sentinel://s1:26379/", "names the master's service"),
        ("redis+sentinel://s1:26379/mymaster/zero", "is a number, not 'zero'"),
        ("redis+sentinel://s1:26379/mymaster/0/extra", "names the master's service"),
        ("redis+sentinel://s1:port/mymaster", "bad sentinel port 'port'"),
        ("redis+sentinel://s1:70000/mymaster", "bad sentinel port '70000'"),
        ("redis+sentinel://s1,,s2/mymaster", "host:port,host:port"),
        ("redis+sentinel://[::1/mymaster", "bad sentinel address"),
        ("redis+sentinel://s1/mymaster?timeout=3", "unknown Sentinel URL option(s) timeout"),
    ],
)
def test_a_bad_url_is_refused_saying_why(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_redis_url(url)


def test_a_process_building_its_clients_refuses_a_bad_url_without_echoing_the_password() -> None:
    with pytest.raises(ValueError, match="names the master's service") as caught:
        queue_client(RedisSettings(url="redis+sentinel://:hunter2@s1:26379"))
    assert "hunter2" not in str(caught.value)


def test_the_factory_builds_a_sentinel_pool_for_the_master() -> None:
    pool = redis_pool(
        "rediss+sentinel://:pw@s1:26379,s2:26380/mymaster/2?sentinel_password=sp", socket_timeout=5
    )
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster" and pool.is_master
    assert pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (2, "pw", 5)
    sentinels = pool.sentinel_manager.sentinels
    addresses = [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ]
    assert addresses == [("s1", 26379), ("s2", 26380)]
    # The sentinels get the socket options and their own password, never the master's.
    assert all(s.connection_pool.connection_kwargs["password"] == "sp" for s in sentinels)
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 5 for s in sentinels)


def test_the_queue_client_and_arqs_settings_read_the_same_sentinel_url() -> None:
    settings = RedisSettings(url="redis+sentinel://:pw@s1:26379,s2/mymaster/4", queue_name="q")
    client = queue_client(settings)
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.default_queue_name == "q"
    arq = arq_redis_settings(settings)
    assert arq.sentinel and arq.sentinel_master == "mymaster"
    assert (arq.host, arq.database, arq.password) == ([("s1", 26379), ("s2", 26379)], 4, "pw")


def test_a_single_server_url_still_builds_a_plain_pool() -> None:
    pool = redis_pool("redis://127.0.0.1:6390/5", socket_connect_timeout=2)
    assert not isinstance(pool, SentinelConnectionPool)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["socket_connect_timeout"]) == (
        "127.0.0.1",
        6390,
        5,
        2,
    )
