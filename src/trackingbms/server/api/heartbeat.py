"""``POST /heartbeat``: gateway health and per-battery link state; hands back a newer remote config."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from trackingbms.server.api.common import E401, err422, json_response
from trackingbms.server.api.deps import CurrentDevice, StoreDep
from trackingbms.server.schemas import Heartbeat, HeartbeatReply

router = APIRouter()


@router.post(
    "/heartbeat",
    response_model=HeartbeatReply,
    tags=["device"],
    responses=E401,
    summary="Gateway health and per-battery link state",
)
async def heartbeat(request: Request, body: Heartbeat, device: CurrentDevice, store: StoreDep) -> Response:
    data = body.model_dump(mode="json")
    try:
        orjson.dumps(data)
    except TypeError:  # e.g. an integer beyond 64 bits in a field we do not know
        raise err422(["body"], "numbers must fit in 64 bits", "value_error") from None
    await store.heartbeat(device, data)
    request.app.state.hub.publish(
        device.tenant_id, {"type": "heartbeat", "device_id": device.name, "heartbeat": data}
    )
    reply: dict[str, Any] = {"ok": True}
    cfg = device.pending_config(body.config_version if body.config_version is not None else -1)
    if cfg is not None:
        reply["config"] = cfg
    return json_response(reply)
