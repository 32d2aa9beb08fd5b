"""Fleet reads: sites, every battery with its last known state and connectivity, one battery."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from trackingbms.server.api.common import E401, E404, json_response
from trackingbms.server.api.deps import Tenant
from trackingbms.server.schemas import BatteryDetail, Fleet, SiteOut

router = APIRouter()


@router.get("/sites", response_model=list[SiteOut], tags=["fleet"], responses=E401)
async def list_sites(ts: Tenant) -> Response:
    return json_response(await ts.sites())


@router.get("/fleet", response_model=Fleet, tags=["fleet"], responses=E401)
async def fleet(ts: Tenant) -> Response:
    """Every battery of your tenant with its latest sample and connectivity."""
    return json_response({"batteries": await ts.fleet()})


@router.get(
    "/batteries/{battery_id}", response_model=BatteryDetail, tags=["fleet"], responses={**E401, **E404}
)
async def battery(battery_id: str, ts: Tenant) -> Response:
    return json_response(await ts.battery(battery_id))
