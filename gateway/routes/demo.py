"""The web demo: ``GET /`` and ``GET /demo`` serve the page, ``GET /demo/<asset>`` its stylesheet and script.

Plain files from ``gateway/static/demo`` (no build step). The page needs no key to load: it asks for one
(or reads it from the link's ``#key=`` fragment) and calls the public API with it, like any client. A
strict Content-Security-Policy keeps it to this origin: scripts, styles and API calls from here only,
images from here or made in the browser (``blob:``/``data:``: the chosen photo and the inlined result).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "demo"
# The only files served, with their types: nothing else under the folder is reachable.
ASSETS = {"demo.css": "text/css; charset=utf-8", "demo.js": "text/javascript; charset=utf-8"}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (ETag / Last-Modified): an upgraded gateway never serves a stale script.
    "Cache-Control": "no-cache",
}


def _file(name: str, content_type: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers={**SECURITY_HEADERS, "Content-Type": content_type})


@routes.get("/")
@routes.get("/demo")
@routes.get("/demo/")
async def page(request: web.Request) -> web.FileResponse:
    return _file("index.html", "text/html; charset=utf-8")


@routes.get("/demo/{asset}")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["asset"]
    content_type = ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text=f"no such demo asset (there are: {', '.join(ASSETS)})")
    return _file(name, content_type)
