"""The web dashboard, served by the server (static, vendored assets; no CDN, no Node build)."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Attach the dashboard's routes and static files to the server app."""
