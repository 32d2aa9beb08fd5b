"""Devices (gateways) of the tenant and their remote config."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from trackingbms.server.api.common import E401, E404, json_response
from trackingbms.server.api.deps import Tenant, Writer
from trackingbms.server.schemas import DeviceConfig, DeviceConfigIn, DeviceOut

router = APIRouter()


@router.get("/devices", response_model=list[DeviceOut], tags=["devices"], responses=E401)
async def list_devices(ts: Tenant) -> Response:
    return json_response(await ts.devices())


@router.get("/devices/{device_id}", response_model=DeviceOut, tags=["devices"], responses={**E401, **E404})
async def get_device(device_id: str, ts: Tenant) -> Response:
    return json_response(await ts.device(device_id))


@router.put(
    "/devices/{device_id}/config",
    response_model=DeviceConfig,
    tags=["devices"],
    responses={**E401, **E404, 403: {"description": "viewers may not change anything"}},
)
async def put_device_config(device_id: str, body: DeviceConfigIn, ts: Tenant, _user: Writer) -> Response:
    """Set a gateway's remote config (admin / operator). It gets a new `config_version` and is handed to
    the gateway in its next heartbeat or ingest reply."""
    return json_response(
        await ts.set_device_config(device_id, body.model_dump(mode="json", exclude_none=True))
    )
