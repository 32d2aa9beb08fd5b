"""Users: log in, log out, who am I."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from trackingbms.server.api.common import E401, json_response
from trackingbms.server.api.deps import CurrentUser, StoreDep, UserCredentials
from trackingbms.server.schemas import LoginIn, LoginOut, UserOut

router = APIRouter()


@router.post(
    "/auth/login",
    response_model=LoginOut,
    tags=["user"],
    responses={401: {"description": "wrong email or password"}},
)
async def login(body: LoginIn, store: StoreDep) -> Response:
    got = await store.login(body.email, body.password)
    if got is None:
        raise HTTPException(401, "wrong email or password")
    token, user = got
    return json_response(
        {
            "access_token": token,
            "token_type": "bearer",
            "user": {"email": user.email, "role": user.role, "tenant": user.tenant},
        }
    )


@router.post("/auth/logout", tags=["user"], responses=E401, summary="Revoke the access token used")
async def logout(store: StoreDep, _user: CurrentUser, cred: UserCredentials) -> Response:
    assert cred is not None  # user_auth has checked it
    await store.revoke_token(cred.credentials)
    return json_response({"ok": True})


@router.get("/me", response_model=UserOut, tags=["user"], responses=E401)
async def me(user: CurrentUser) -> Response:
    return json_response({"email": user.email, "role": user.role, "tenant": user.tenant})
