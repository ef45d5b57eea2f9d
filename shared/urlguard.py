"""The SSRF guard for every outbound URL Veil opens (``image_url`` fetches, webhook deliveries).

* Only ``http``/``https``; no credentials in the URL.
* Every address a host resolves to is checked; if ANY is loopback, link-local (cloud metadata included),
  private, unique-local, unspecified, multicast, reserved, CGNAT (100.64.0.0/10) or otherwise not global —
  or an IPv4-mapped/-embedded form of one — the URL is refused, unless the host name or the address is on
  the operator's allowlist (``settings.effective_url_allowlist()``: CIDRs or host names, ``*.example.org``
  for subdomains).
* The connection goes to the addresses that were checked: the check lives in the aiohttp resolver, and
  aiohttp connects to exactly what the resolver returned (no second lookup, so no DNS rebinding).
  IP-literal hosts skip resolvers and are checked before the request.
* Callers follow redirects by hand and check each hop again (see ``gateway/urlfetch.py``).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from shared.errors import UpstreamFetchError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
FETCH_FAILED = "FETCH_FAILED"

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


class UrlNotAllowedError(UpstreamFetchError):
    """The URL points where the gateway must not go (400 ``URL_NOT_ALLOWED``)."""

    code = URL_NOT_ALLOWED


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64, IPv4-compatible)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_reason(address: IPAddress) -> str | None:
    """Why a fetch must not connect to ``address``; ``None`` when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            return None if reason is None else f"{reason} (embedded in {address})"
    checks = (
        ("an unspecified", address.is_unspecified),
        ("a loopback", address.is_loopback),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
        ("a shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("a site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
    )
    for name, hit in checks:
        if hit:
            return f"{address} is {name} address"
    if not address.is_global:
        return f"{address} is not a global address"
    return None


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address (brackets and IPv6 zone ids tolerated), else ``None``."""
    candidate = text.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


class UrlAllowlist:
    """The operator's exceptions to the guard: networks (``10.0.0.0/8``, ``127.0.0.1``) and host names
    (``images.internal``; ``*.internal`` or ``.internal`` for every subdomain)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[IPNetwork] = []
        self.hosts: set[str] = set()
        self.suffixes: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _normalise_host(entry)
            if name.startswith("*."):
                self.suffixes.append(name[1:])
            elif name.startswith("."):
                self.suffixes.append(name)
            else:
                self.hosts.add(name)

    def allows_host(self, host: str) -> bool:
        name = _normalise_host(host)
        return name in self.hosts or any(name.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.networks
        )


def check_address(host: str, address: IPAddress, allowlist: UrlAllowlist) -> None:
    """Raise :class:`UrlNotAllowedError` unless ``host`` may be fetched from ``address``."""
    if allowlist.allows_host(host) or allowlist.allows_address(address):
        return
    reason = forbidden_reason(address)
    if reason is not None:
        raise UrlNotAllowedError(f"refusing to fetch from {host}: {reason}")


def check_url(url: URL, allowlist: UrlAllowlist) -> None:
    """Checks that need no DNS: scheme, credentials, host present; IP literals are checked right here."""
    if url.scheme not in {"http", "https"}:
        raise UrlNotAllowedError(
            f"only http and https URLs can be fetched, not {url.scheme or 'no scheme'!r}"
        )
    if not url.host:
        raise UrlNotAllowedError("the URL has no host")
    if url.user is not None or url.password is not None:
        raise UrlNotAllowedError("URLs with credentials are not fetched")
    address = parse_address(url.host)
    if address is not None:
        check_address(url.host, address, allowlist)
    elif _legacy_ipv4(url.host):
        # 127.1, 2130706433, 0x7f.1: resolvers map these onto addresses; nobody needs them for images.
        raise UrlNotAllowedError(f"refusing the non-canonical numeric host {url.host!r}")


def _legacy_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True


class GuardedResolver(AbstractResolver):
    """Resolves with getaddrinfo (in a thread) and refuses the host if any address is forbidden.

    aiohttp connects to exactly the addresses returned here, which pins the connection to what was
    checked.
    """

    def __init__(self, allowlist: UrlAllowlist, resolver: AbstractResolver | None = None) -> None:
        self._allowlist = allowlist
        self._resolver = resolver or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        if not results:
            raise OSError(f"{host} did not resolve to any address")
        for result in results:
            address = parse_address(result["host"])
            if address is None:
                raise UrlNotAllowedError(
                    f"refusing to fetch from {host}: unparseable address {result['host']}"
                )
            check_address(host, address, self._allowlist)
        return results

    async def close(self) -> None:
        await self._resolver.close()


def create_guarded_session(
    allowlist: UrlAllowlist, *, user_agent: str = "Veil image fetcher", accept: str = "image/*"
) -> aiohttp.ClientSession:
    """A client session whose every connection passes the guard; no proxies from the environment."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(allowlist), use_dns_cache=False, limit=64)
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        headers={"User-Agent": user_agent, "Accept": accept},
        cookie_jar=aiohttp.DummyCookieJar(),
    )
