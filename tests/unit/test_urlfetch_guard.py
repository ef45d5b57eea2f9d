"""The SSRF guard's address classification and allowlist matching (pure: no network)."""

from __future__ import annotations

import ipaddress

import pytest
from yarl import URL

from gateway.errors import http_status
from shared.urlguard import (
    UrlAllowlist,
    UrlNotAllowedError,
    check_address,
    check_url,
    forbidden_reason,
    parse_address,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "169.254.0.1",
        "100.64.0.1",  # CGNAT
        "100.127.255.254",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",  # documentation
        "198.18.0.1",  # benchmarking
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "fec0::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::ffff:100.64.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:db8::1",  # documentation
    ],
)
def test_forbidden_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
    ],
)
def test_public_addresses(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


def test_reasons_are_readable() -> None:
    assert forbidden_reason(ipaddress.ip_address("127.0.0.1")) == "127.0.0.1 is a loopback address"
    assert "link-local" in str(forbidden_reason(ipaddress.ip_address("169.254.169.254")))
    assert "CGNAT" in str(forbidden_reason(ipaddress.ip_address("100.64.1.1")))
    mapped = str(forbidden_reason(ipaddress.ip_address("::ffff:10.0.0.1")))
    assert "private" in mapped
    assert "::ffff:" in mapped


def test_parse_address() -> None:
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("example.org") is None


def test_allowlist_networks() -> None:
    allowlist = UrlAllowlist(["10.0.0.0/8", "127.0.0.1", "fd00::/8", "  "])
    assert allowlist.allows_address(ipaddress.ip_address("10.20.30.40"))
    assert allowlist.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert not allowlist.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert allowlist.allows_address(ipaddress.ip_address("fd00::5"))
    assert allowlist.allows_address(ipaddress.ip_address("::ffff:10.1.1.1"))  # mapped form of an allowed v4
    assert not allowlist.allows_address(ipaddress.ip_address("192.168.0.1"))
    assert not allowlist.allows_host("10.0.0.1.example.org")


def test_allowlist_host_names() -> None:
    allowlist = UrlAllowlist(["images.internal", "*.cdn.corp", ".media.lan", "MiXeD.Example."])
    assert allowlist.allows_host("images.internal")
    assert allowlist.allows_host("IMAGES.internal.")
    assert not allowlist.allows_host("evil-images.internal")
    assert not allowlist.allows_host("images.internal.evil.org")
    assert allowlist.allows_host("a.cdn.corp")
    assert allowlist.allows_host("a.b.cdn.corp")
    assert not allowlist.allows_host("cdn.corp")
    assert not allowlist.allows_host("xcdn.corp")
    assert allowlist.allows_host("x.media.lan")
    assert allowlist.allows_host("mixed.example")
    assert not allowlist.networks


def test_check_address_uses_both_kinds_of_entry() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    with pytest.raises(UrlNotAllowedError) as refused:
        check_address("metadata.internal", metadata, UrlAllowlist([]))
    assert refused.value.code == "URL_NOT_ALLOWED"
    assert http_status(refused.value) == 400
    check_address("metadata.internal", metadata, UrlAllowlist(["metadata.internal"]))
    check_address("anything", metadata, UrlAllowlist(["169.254.0.0/16"]))
    check_address("example.org", ipaddress.ip_address("93.184.216.34"), UrlAllowlist([]))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/a.jpg",
        "file:///etc/passwd",
        "gopher://example.org/",
        "http://user:pass@example.org/a.jpg",
        "http://127.0.0.1/a.jpg",
        "http://[::1]:8080/a.jpg",
        "http://[::ffff:169.254.169.254]/latest",
        "http://169.254.169.254/latest/meta-data/",
        "/relative/path.jpg",
        "http://127.1/a.jpg",
        "http://2130706433/a.jpg",
        "http://0x7f.0.0.1/a.jpg",
        "http://017700000001/a.jpg",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(UrlNotAllowedError):
        check_url(URL(url), UrlAllowlist([]))


def test_check_url_accepts() -> None:
    check_url(URL("https://example.org/a.jpg"), UrlAllowlist([]))  # host names are checked at resolve time
    check_url(URL("http://127.0.0.1:9000/a.jpg"), UrlAllowlist(["127.0.0.0/8"]))
    check_url(URL("http://8.8.8.8/a.jpg"), UrlAllowlist([]))
