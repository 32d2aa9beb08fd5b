"""``POST /heartbeat``: gateway health and per-battery link state; hands back a newer remote config."""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from trackingbms.server.api.common import E401, err422, json_response
from trackingbms.server.api.deps import CurrentDevice, StoreDep
from trackingbms.server.schemas import Heartbeat, HeartbeatReply
from trackingbms.server.store import DeviceRef, now_ms, packing

router = APIRouter()


async def rate_limited_device(request: Request, device: CurrentDevice) -> DeviceRef:
    """The calling device, within its heartbeat bucket (429 otherwise). A dependency, so that it runs
    before the body is validated: malformed heartbeats are counted too."""
    wait = await request.app.state.heartbeat_limiter.acquire(device.id)
    if wait > 0:
        raise HTTPException(
            429, "rate limit: slow down", headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    return device


@router.post(
    "/heartbeat",
    response_model=HeartbeatReply,
    tags=["device"],
    responses={
        **E401,
        413: {"description": "body larger than 64 KiB"},
        429: {"description": "rate-limited; see Retry-After"},
    },
    summary="Gateway health and per-battery link state",
)
async def heartbeat(
    request: Request,
    device: Annotated[DeviceRef, Depends(rate_limited_device)],
    body: Heartbeat,
    store: StoreDep,
) -> Response:
    """Known fields only (others are dropped), bounded, finite numbers. With `ts` (the gateway's clock)
    the server keeps the clock's offset as `clock_skew_s` and whether it is within the sample window as
    `clock_ok`."""
    settings = request.app.state.settings
    received = now_ms()
    data = body.model_dump(mode="json")
    if body.ts is not None:
        try:
            skew_s = (packing.parse_ts_ms(body.ts) - received) / 1000
        except packing.SampleError as e:
            raise err422(["body", "ts"], str(e), "datetime_parsing") from None
        data["clock_skew_s"] = round(skew_s, 1)
        data["clock_ok"] = abs(skew_s) <= settings.max_clock_skew_s
    try:
        orjson.dumps(data)
    except TypeError:  # e.g. an integer beyond 64 bits in a field we do not know
        raise err422(["body"], "numbers must fit in 64 bits", "value_error") from None
    await store.heartbeat(device, data, received)
    request.app.state.hub.publish(
        device.tenant_id, {"type": "heartbeat", "device_id": device.name, "heartbeat": data}
    )
    reply: dict[str, Any] = {"ok": True}
    cfg = device.pending_config(body.config_version if body.config_version is not None else -1)
    if cfg is not None:
        reply["config"] = cfg
    return json_response(reply)
