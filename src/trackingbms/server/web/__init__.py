"""The web dashboard, served by the server (static, vendored assets; no CDN, no Node build).

The files live in :mod:`trackingbms.webapp`, shared with the gateway's LAN API, which serves the same app
in direct mode.

The page is a few vanilla JS modules under ``static/js`` that talk to the documented API
(docs/api.md) with the user's bearer token and follow the ``/api/v1/live`` WebSocket.
``static/faults.json`` is generated from ``trackingbms.daly.faults.FAULT_TEXT`` (the server does not
import the Daly layer); tests/web/test_assets.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from trackingbms.webapp import STATIC_DIR

#: Swagger UI's bundle and stylesheet, shipped by the fastapi-offline package (no CDN at run time)
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"

# The shell must revalidate every time so that a server upgrade reaches browsers at once;
# the service worker keeps it for offline use.
_NO_CACHE = {"Cache-Control": "no-cache"}


def mount(app: FastAPI) -> None:
    """Attach the dashboard's routes and static files to the server app.

    Only ``/``, ``/sw.js``, ``/manifest.webmanifest``, ``/favicon.ico``, ``/static/*`` and the API explorer
    (``/docs``, ``/docs-assets/*``) are taken, so ``/api/*`` stays the server's whatever order routes are
    added in.
    """

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)

    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        # Served from the root so that its scope covers the whole dashboard.
        return FileResponse(STATIC_DIR / "sw.js", media_type="text/javascript", headers=_NO_CACHE)

    @app.get("/manifest.webmanifest", include_in_schema=False)
    async def manifest() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "manifest.webmanifest", media_type="application/manifest+json", headers=_NO_CACHE
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "icons" / "icon-192.png", media_type="image/png")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs" / "index.html", media_type="text/html", headers=_NO_CACHE)

    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
