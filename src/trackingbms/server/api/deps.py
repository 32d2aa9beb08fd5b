"""What the routers depend on, as ``Annotated`` aliases: who is calling (``CurrentDevice``, ``CurrentUser``,
``Writer``), the tenant's door to the store (``Tenant``), the store and the ingest service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from trackingbms.server.ingest import IngestService
from trackingbms.server.store import DeviceRef, Store, TenantStore, UserRef
from trackingbms.server.store.api_tokens import is_api_token

device_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="DeviceToken",
    description="device token from `trackingbms admin provision-device`",
)
user_bearer = HTTPBearer(
    auto_error=False, scheme_name="UserToken", description="access_token from POST /api/v1/auth/login"
)


# The dependencies below only read memory, so they are ``async def``: FastAPI runs a plain ``def`` dependency
# in the threadpool, a thread handoff (two wake-ups and the GIL passed back and forth) on every request.


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_ingest(request: Request) -> IngestService:
    return request.app.state.ingest


def unauthorized(msg: str) -> HTTPException:
    return HTTPException(401, msg, headers={"WWW-Authenticate": "Bearer"})


StoreDep = Annotated[Store, Depends(get_store)]
Ingest = Annotated[IngestService, Depends(get_ingest)]
UserCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)]


async def device_auth(
    request: Request,
    store: StoreDep,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(device_bearer)],
) -> DeviceRef:
    if cred is None:
        raise unauthorized("missing device token (Authorization: Bearer …)")
    regions = request.app.state.regions
    if regions is not None:  # a token naming another home region: 421 with its URL, no lookup
        regions.check_device_token(cred.credentials)
    device = await store.device_for_token(cred.credentials)
    if device is None:
        raise unauthorized("unknown or revoked device token")
    if regions is not None:  # a tenant moved to another region
        regions.check_tenant(device.tenant_id)
    return device


async def user_auth(request: Request, store: StoreDep, cred: UserCredentials) -> UserRef:
    if cred is None:
        raise unauthorized("missing access token (Authorization: Bearer …)")
    user = await store.user_for_token(cred.credentials)
    if user is None and is_api_token(cred.credentials):  # a personal access token (integrations)
        user = await store.user_for_api_token(cred.credentials)
    if user is None:
        raise unauthorized("unknown, expired or revoked access token")
    if request.app.state.regions is not None:
        request.app.state.regions.check_tenant(user.tenant_id)
    return user


CurrentDevice = Annotated[DeviceRef, Depends(device_auth)]
CurrentUser = Annotated[UserRef, Depends(user_auth)]


async def tenant_store(store: StoreDep, user: CurrentUser) -> TenantStore:
    return store.tenant(user.tenant_id)


async def writer(user: CurrentUser) -> UserRef:
    if not user.can_write:
        raise HTTPException(403, f"role {user.role!r} may not change anything")
    return user


#: the calling user's tenant: the only way routes reach tenant data
Tenant = Annotated[TenantStore, Depends(tenant_store)]
#: a user allowed to change things (admin / operator); 403 for viewers
Writer = Annotated[UserRef, Depends(writer)]
