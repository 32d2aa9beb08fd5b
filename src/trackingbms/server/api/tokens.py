"""Personal access tokens for integrations: ``/api/v1/tokens`` (create, list, revoke).

Created from a dashboard login (a token cannot mint tokens), shown once. Use one as
``Authorization: Bearer tbp_…`` on any read route (and on writes, with the read-write scope).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from trackingbms.server.api.deps import CurrentUser, Tenant, UserCredentials
from trackingbms.server.store.api_tokens import MAX_EXPIRY_DAYS, is_api_token

router = APIRouter(tags=["tokens"])


class ApiTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, examples=["grafana"])
    scope: Literal["read", "read-write"] = "read"
    expires_days: int = Field(90, ge=1, le=MAX_EXPIRY_DAYS, description="days until the token stops working")


class ApiTokenOut(BaseModel):
    id: int
    name: str
    scope: str
    user: str
    created_ms: int
    expires_ms: int
    last_used_ms: int | None
    status: Literal["active", "expired", "revoked"]


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="shown once: store it now (only its hash is kept)")


async def _session_user(user: CurrentUser, cred: UserCredentials) -> CurrentUser:
    if cred is not None and is_api_token(cred.credentials):
        raise HTTPException(403, "an API token cannot manage tokens: log in, or use the admin CLI")
    return user


SessionUser = Annotated[CurrentUser, Depends(_session_user)]


@router.get("/tokens", response_model=list[ApiTokenOut], summary="Your API tokens (admins: all=true)")
async def list_tokens(
    user: SessionUser, ts: Tenant, all_: Annotated[bool, Query(alias="all")] = False
) -> Response:
    if all_ and user.role != "admin":
        raise HTTPException(403, "only an admin may list every user's tokens")
    return JSONResponse(await ts.list_api_tokens(None if all_ else user.email))


@router.post("/tokens", response_model=ApiTokenCreated, status_code=201, summary="Create an API token")
async def create_token(body: ApiTokenIn, user: SessionUser, ts: Tenant) -> Response:
    try:
        created = await ts.create_api_token(user.email, body.name, body.scope, body.expires_days)
    except ValueError as exc:
        raise HTTPException(403 if "can only hold" in str(exc) else 422, str(exc)) from None
    return JSONResponse(created, status_code=201)


@router.delete("/tokens/{token_id}", response_model=ApiTokenOut, summary="Revoke an API token")
async def revoke_token(token_id: int, user: SessionUser, ts: Tenant) -> Response:
    # your own tokens; an admin may revoke anyone's in the tenant
    return JSONResponse(await ts.revoke_api_token(token_id, None if user.role == "admin" else user.email))
