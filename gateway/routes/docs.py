"""``GET /openapi.json`` (the OpenAPI 3.1 document, built once) and ``GET /docs`` (Swagger UI), without
authentication.

Swagger UI's files come from the ``swagger-ui-py`` package's ``static`` folder, served under
``/docs/static/``: the page loads nothing from anywhere else, so it works offline. Its one inline script is
allowed by hash in a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from gateway.openapi import document

routes = web.RouteTableDef()

STATIC_PREFIX = "/docs/static"
# The package's own folder of Swagger UI's built files (the bundle, its CSS and icons).
SWAGGER_STATIC = Path(str(files("swagger_ui") / "static"))

# validatorUrl none: the bundle would otherwise send the document to validator.swagger.io.
_INIT = (
    'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,'
    ' validatorUrl: "none", presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"});'
)
_INIT_HASH = base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Veil API</title>
<link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui.css">
<link rel="icon" type="image/png" href="{STATIC_PREFIX}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PREFIX}/swagger-ui-bundle.js"></script>
<script>{_INIT}</script>
</body>
</html>
"""

HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'sha256-{_INIT_HASH}'",
            "style-src 'self' 'unsafe-inline'",  # Swagger UI sets inline styles
            "img-src 'self' data:",
            "connect-src 'self'",  # the document, and "Try it out" against this gateway
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    # The first call builds it (~0.2 s of schema generation): off the event loop.
    return web.Response(body=await asyncio.to_thread(document), content_type="application/json")


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers=HEADERS)


routes.static(STATIC_PREFIX, SWAGGER_STATIC)
