"""The web app's files, shared by the two places that serve it: the server (server mode, over the internet)
and the gateway's LAN API (direct mode, beside the pack). The app decides its mode itself in the browser
(``static/js/mode.js``); see docs/architecture.md, "Direct mode".

This package holds only static files (vanilla JS modules, vendored uPlot, catalogues) and the small helpers
below to locate them, so that both the server (FastAPI) and the gateway (``websockets`` alone) can serve them
without importing each other. No web framework is imported here.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"

#: root paths of the shell (served at the root so that the service worker's scope covers the whole app)
#: → file under STATIC_DIR
ROOT_FILES: dict[str, str] = {
    "/": "index.html",
    "/sw.js": "sw.js",
    "/manifest.webmanifest": "manifest.webmanifest",
    "/favicon.ico": "icons/icon-192.png",
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def content_type(path: Path) -> str:
    return _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def locate(url_path: str) -> Path | None:
    """The file a GET of ``url_path`` serves (``/``, ``/sw.js``, ``/static/...``), or None.

    Never leaves STATIC_DIR: ``..``, absolute parts and symlinks out of it answer None.
    """
    if url_path in ROOT_FILES:
        return STATIC_DIR / ROOT_FILES[url_path]
    if not url_path.startswith("/static/"):
        return None
    rel = url_path.removeprefix("/static/")
    if not rel or "\\" in rel or "\x00" in rel:
        return None
    candidate = (STATIC_DIR / rel).resolve()
    root = STATIC_DIR.resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def no_cache(url_path: str) -> bool:
    """The shell must revalidate every time so that an upgrade reaches browsers at once (the service worker
    keeps a copy for offline use); the rest may be cached by the browser's HTTP cache as usual."""
    return url_path in ROOT_FILES and url_path != "/favicon.ico"
