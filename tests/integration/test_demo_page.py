"""The web demo's files as the gateway serves them: the page at ``/``, ``/demo`` and ``/demo/`` without a
key, its two assets with their types, the security headers, nothing else under the folder, no external
URL, and a label for every control."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from gateway.routes.demo import STATIC_DIR
from tests.integration.conftest import GatewayClient

pytestmark = pytest.mark.integration

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.mark.parametrize("path", ["/", "/demo", "/demo/"])
async def test_the_page_is_served_without_a_key(client: GatewayClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == "text/html"
    body = await response.text()
    assert '<script src="/demo/demo.js" defer></script>' in body
    assert '<link rel="stylesheet" href="/demo/demo.css">' in body
    csp = {
        directive.split(" ", 1)[0]: directive.split(" ", 1)[1]
        for directive in response.headers["Content-Security-Policy"].split("; ")
    }
    assert csp == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data: blob:",
        "connect-src": "'self'",
        "form-action": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("asset", "content_type"), [("demo.js", "text/javascript"), ("demo.css", "text/css")]
)
async def test_assets_are_served_with_their_types(
    client: GatewayClient, asset: str, content_type: str
) -> None:
    response = await client.get(f"/demo/{asset}")
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert await response.read() == (STATIC_DIR / asset).read_bytes()


@pytest.mark.parametrize(
    "path", ["/demo/index.html", "/demo/other.js", "/demo/..%2Fdemo.py", "/demo/demo.js/x"]
)
async def test_nothing_else_is_served(client: GatewayClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert body["code"] == "NOT_FOUND"
    assert body["message"]


def test_no_external_urls_and_no_inline_code() -> None:
    """The CSP allows this origin only: every file must work without anything from elsewhere."""
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {SVG_NAMESPACE}, (path.name, urls)
    page = (STATIC_DIR / "index.html").read_text()
    assert "<style" not in page
    assert " style=" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers


class _Controls(HTMLParser):
    """Every form control's id, the ids labels point at, and the controls wrapped in a label."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()
        self.wrapped = 0
        self._in_label = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "label":
            self._in_label += 1
            if attributes.get("for"):
                self.labelled.add(str(attributes["for"]))
        elif tag in ("input", "select", "textarea"):
            self.controls.append(attributes)
            self.wrapped += self._in_label > 0

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1


def test_every_control_has_a_label() -> None:
    parser = _Controls()
    parser.feed((STATIC_DIR / "index.html").read_text())
    unlabelled = [
        control
        for control in parser.controls
        if control.get("id") not in parser.labelled and control.get("type") not in ("radio", "checkbox")
    ]
    assert not unlabelled
    toggles = [control for control in parser.controls if control.get("type") in ("radio", "checkbox")]
    assert parser.wrapped >= len(toggles) == 4  # the three targets and "show the boxes", inside labels
    slider = next(control for control in parser.controls if control.get("id") == "slider")
    assert slider["type"] == "range"  # keyboard-operable by itself
