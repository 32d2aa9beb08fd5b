"""Users: log in, log out, who am I."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from trackingbms.server import security
from trackingbms.server.api.common import E401, json_response
from trackingbms.server.api.deps import CurrentUser, StoreDep, UserCredentials
from trackingbms.server.schemas import LoginIn, LoginOut, UserOut
from trackingbms.server.throttle import account_key, address_key

router = APIRouter()


@router.post(
    "/auth/login",
    response_model=LoginOut,
    tags=["user"],
    responses={
        401: {"description": "wrong email or password"},
        421: {"description": "the user's tenant lives in another region: `url` (and `Location`) say where"},
        413: {"description": "body larger than 4 KiB"},
        429: {"description": "too many failed logins, or too many at once; see Retry-After"},
    },
)
async def login(request: Request, body: LoginIn, store: StoreDep) -> Response:
    """Failed logins are throttled per account and per client address with growing delays (429 +
    `Retry-After`, docs/security.md)."""
    app = request.app
    throttle = app.state.login_throttle
    keys = [account_key(body.email), address_key(request.client.host if request.client else "?")]
    wait = await throttle.retry_after(keys)
    if wait > 0:
        after = max(1, math.ceil(wait))
        raise HTTPException(
            429, f"too many failed logins: try again in {after} s", headers={"Retry-After": str(after)}
        )
    try:
        got = await store.login(body.email, body.password, app.state.password_checker)
    except security.Busy:
        raise HTTPException(
            429, "the server is busy with other logins: try again in a second", headers={"Retry-After": "1"}
        ) from None
    regions = app.state.regions
    if got is None:
        if regions is not None:  # not a user here: the directory may know its home region (421)
            regions.check_email(body.email)
        await throttle.failed(keys)
        raise HTTPException(401, "wrong email or password")
    await throttle.succeeded(keys)
    token, user = got
    if regions is not None and user.tenant_id in regions.elsewhere:  # the tenant moved to another region
        await store.revoke_token(token)
        regions.check_tenant(user.tenant_id)
    return json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "user": {"email": user.email, "role": user.role, "tenant": user.tenant},
        }
    )


@router.post("/auth/logout", tags=["user"], responses=E401, summary="Revoke the access token used")
async def logout(request: Request, store: StoreDep, _user: CurrentUser, cred: UserCredentials) -> Response:
    """Revokes the token and closes the live sockets opened with it."""
    assert cred is not None  # user_auth has checked it
    await store.revoke_token(cred.credentials)
    request.app.state.live_sessions.end(security.token_hash(cred.credentials))
    return json_response({"ok": True})


@router.get("/me", response_model=UserOut, tags=["user"], responses=E401)
async def me(user: CurrentUser) -> Response:
    return json_response({"email": user.email, "role": user.role, "tenant": user.tenant})
