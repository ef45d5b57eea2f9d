"""The store's client goes through the proxy the environment names (HTTP(S)_PROXY, NO_PROXY), as boto3
reads them: a store reached only through a proxy works without a setting of Veil's own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import NotFoundError, StoreUnavailableError
from shared.settings import S3Settings
from shared.storage import ObjectStore

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY")
_NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
)


class _Proxy(BaseHTTPRequestHandler):
    """Answers every request itself (a missing key), remembering the URL it was asked for."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)  # absolute-form for a proxied request: http://host:port/bucket/key
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(_NO_SUCH_KEY)))
        self.end_headers()
        self.wfile.write(_NO_SUCH_KEY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_PROXY_VARIABLES, "NO_PROXY", "ALL_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Proxy,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_requests_go_through_the_proxy(monkeypatch: pytest.MonkeyPatch, proxy: tuple[str, list[str]]) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    store = ObjectStore(S3Settings(endpoint_url="http://store.internal:8333", bucket="veil"))
    with pytest.raises(NotFoundError):
        store.get("uploads/j1")
    assert seen == ["http://store.internal:8333/veil/uploads/j1"]


def test_no_proxy_exempts_the_endpoint(monkeypatch: pytest.MonkeyPatch, proxy: tuple[str, list[str]]) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    store = ObjectStore(S3Settings(endpoint_url="http://127.0.0.1:9", request_timeout_seconds=1))  # refused
    with pytest.raises(StoreUnavailableError):
        store.get("uploads/j1")
    assert seen == []
