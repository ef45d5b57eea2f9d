"""The store's proxy is read from the environment once, as boto3 reads it (HTTP(S)_PROXY, NO_PROXY)."""

from __future__ import annotations

import pytest

from shared.transfer import proxy_for

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_PROXY_VARIABLES, "NO_PROXY", "ALL_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)


def test_direct_without_proxy_variables() -> None:
    assert proxy_for("http://127.0.0.1:8333") is None
    assert proxy_for(None) is None


def test_the_proxy_for_the_endpoint_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy.internal:3128")
    assert proxy_for("http://minio.internal:9000") == "http://proxy.internal:3128"
    assert proxy_for("https://minio.internal") == "http://tls-proxy.internal:3128"
    assert proxy_for(None) == "http://tls-proxy.internal:3128"  # AWS over HTTPS


def test_no_proxy_exempts_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal")
    assert proxy_for("http://minio.internal:9000") is None
    assert proxy_for("http://s3.example.org") == "http://proxy.internal:3128"
