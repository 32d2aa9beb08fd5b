"""The HTTP API (contract: docs/api.md): one router per resource under ``/api/v1``, thin — who may call is
settled by the dependencies in :mod:`.deps`, the work is done by the store and the ingest service."""

from __future__ import annotations

from fastapi import APIRouter

from trackingbms.server.api import (
    alarms,
    auth,
    devices,
    fleet,
    heartbeat,
    history,
    ingest,
    live,
    relay,
    tokens,
)

router = APIRouter(prefix="/api/v1")
# in this order in the OpenAPI document
for _module in (ingest, heartbeat, auth, fleet, history, devices, alarms, live, tokens, relay):
    router.include_router(_module.router)

__all__ = ["router"]
