"""HTTP routes (thin: auth via dependencies, work in the store). Contract: docs/api.md."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import zlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from trackingbms.model import MEASUREMENT_FIELDS, SAMPLE_FIELDS
from trackingbms.server import codec
from trackingbms.server.schemas import (
    BatteryDetail,
    DeviceConfig,
    DeviceConfigIn,
    DeviceOut,
    Fleet,
    Heartbeat,
    HeartbeatReply,
    HistoryOut,
    IngestReply,
    LoginIn,
    LoginOut,
    SiteOut,
    UserOut,
)
from trackingbms.server.store import DeviceRef, Store, TenantStore, UserRef, now_ms

router = APIRouter(prefix="/api/v1")
log = logging.getLogger("trackingbms.server.ingest")

device_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="DeviceToken",
    description="device token from `trackingbms admin provision-device`",
)
user_bearer = HTTPBearer(
    auto_error=False, scheme_name="UserToken", description="access_token from POST /api/v1/auth/login"
)

E401 = {401: {"description": "missing, wrong or revoked token"}}
E404 = {404: {"description": "no such thing in your tenant"}}


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def get_store(request: Request) -> Store:
    return request.app.state.store


def _unauthorized(msg: str) -> HTTPException:
    return HTTPException(401, msg, headers={"WWW-Authenticate": "Bearer"})


async def device_auth(
    request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(device_bearer)]
) -> DeviceRef:
    if cred is None:
        raise _unauthorized("missing device token (Authorization: Bearer …)")
    device = await get_store(request).device_for_token(cred.credentials)
    if device is None:
        raise _unauthorized("unknown or revoked device token")
    return device


async def user_auth(
    request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)]
) -> UserRef:
    if cred is None:
        raise _unauthorized("missing access token (Authorization: Bearer …)")
    user = await get_store(request).user_for_token(cred.credentials)
    if user is None:
        raise _unauthorized("unknown, expired or revoked access token")
    return user


def tenant_store(request: Request, user: Annotated[UserRef, Depends(user_auth)]) -> TenantStore:
    return get_store(request).tenant(user.tenant_id)


def writer(user: Annotated[UserRef, Depends(user_auth)]) -> UserRef:
    if not user.can_write:
        raise HTTPException(403, f"role {user.role!r} may not change anything")
    return user


Tenant = Annotated[TenantStore, Depends(tenant_store)]


def _err422(loc: list[Any], msg: str, typ: str) -> HTTPException:
    return HTTPException(422, [{"loc": loc, "msg": msg, "type": typ}])


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit)
    except zlib.error:
        raise _err422(["body"], "body is not valid gzip", "gzip_invalid") from None
    if d.unconsumed_tail:
        raise HTTPException(413, f"body larger than {limit} bytes once decompressed")
    return out


def _pending_config(device: DeviceRef, reported: int | None) -> dict[str, Any] | None:
    if device.config is None or device.config_version <= 0:
        return None
    known = reported if reported is not None else device.reported_config_version
    if known is not None and known >= device.config_version:
        return None
    return orjson.loads(device.config)


_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestBatch"}}},
    }
}


@router.post(
    "/ingest",
    response_model=IngestReply,
    tags=["device"],
    summary="Store a batch of samples (idempotent on device, battery_id, seq)",
    openapi_extra=_INGEST_BODY,
    responses={
        **E401,
        413: {"description": "body or batch too large"},
        422: {"description": "body is not a batch"},
        429: {"description": "rate-limited; see Retry-After"},
    },
)
async def ingest(request: Request, device: Annotated[DeviceRef, Depends(device_auth)]) -> Response:
    """Samples are checked one by one: a sample that can never be valid is rejected with its index and
    the field at fault, the rest is stored. Re-sent samples count as duplicates. The reply comes after
    the commit. Send `X-Config-Version` (the config the gateway runs) to get `config` only when newer."""
    app = request.app
    settings = app.state.settings
    wait = app.state.limiter.take(device.id)
    if wait > 0:
        raise HTTPException(
            429, "rate limit: slow down", headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    body = await _read_body(request, settings.max_body_bytes)
    if "gzip" in request.headers.get("content-encoding", "").lower():
        body = _gunzip(body, settings.max_decoded_bytes)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _err422(["body"], f"invalid JSON: {e}", "json_invalid") from None
    if not isinstance(obj, dict) or "samples" not in obj:
        raise _err422(["body", "samples"], 'Field required: the body is {"samples": [...]}', "missing")
    batch = obj["samples"]
    if not isinstance(batch, list):
        raise _err422(["body", "samples"], "Input should be a valid list", "list_type")
    if len(batch) > settings.max_batch_samples:
        raise HTTPException(413, f"at most {settings.max_batch_samples} samples per batch, got {len(batch)}")
    received = now_ms()
    res = await app.state.store.ingest(device, batch, received)
    if res.rejected:
        log.info(
            "device %s: %d of %d samples rejected, first: %s",
            device.name,
            len(res.rejected),
            len(batch),
            res.rejected[0]["error"],
            extra={
                "device": device.name,
                "tenant": device.tenant_id,
                "accepted": res.accepted,
                "duplicates": res.duplicates,
                "rejected": len(res.rejected),
            },
        )
    hub = app.state.hub
    for bid, sample in res.latest.items():
        hub.publish(
            device.tenant_id,
            {
                "type": "sample",
                "battery_id": bid,
                "sample": sample,
                "connectivity": app.state.store.live_connectivity(sample, received),
            },
        )
    header = request.headers.get("x-config-version", "")
    reported = int(header) if header.isdigit() and len(header) < 10 else None
    if reported is not None and reported != device.reported_config_version:
        await app.state.store.note_config_version(device, reported)
    reply: dict[str, Any] = {"accepted": res.accepted, "duplicates": res.duplicates, "rejected": res.rejected}
    cfg = _pending_config(device, reported)
    if cfg is not None:
        reply["config"] = cfg
    return json_response(reply)


@router.post(
    "/heartbeat",
    response_model=HeartbeatReply,
    tags=["device"],
    responses=E401,
    summary="Gateway health and per-battery link state",
)
async def heartbeat(
    request: Request, body: Heartbeat, device: Annotated[DeviceRef, Depends(device_auth)]
) -> Response:
    data = body.model_dump(mode="json")
    try:
        orjson.dumps(data)
    except TypeError:  # e.g. an integer beyond 64 bits in a field we do not know
        raise _err422(["body"], "numbers must fit in 64 bits", "value_error") from None
    await get_store(request).heartbeat(device, data)
    request.app.state.hub.publish(
        device.tenant_id, {"type": "heartbeat", "device_id": device.name, "heartbeat": data}
    )
    reply: dict[str, Any] = {"ok": True}
    cfg = _pending_config(device, body.config_version if body.config_version is not None else -1)
    if cfg is not None:
        reply["config"] = cfg
    return json_response(reply)


@router.post(
    "/auth/login",
    response_model=LoginOut,
    tags=["user"],
    responses={401: {"description": "wrong email or password"}},
)
async def login(request: Request, body: LoginIn) -> Response:
    got = await get_store(request).login(body.email, body.password)
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
async def logout(
    request: Request,
    _user: Annotated[UserRef, Depends(user_auth)],
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(user_bearer)],
) -> Response:
    assert cred is not None  # user_auth has checked it
    await get_store(request).revoke_token(cred.credentials)
    return json_response({"ok": True})


@router.get("/me", response_model=UserOut, tags=["user"], responses=E401)
async def me(user: Annotated[UserRef, Depends(user_auth)]) -> Response:
    return json_response({"email": user.email, "role": user.role, "tenant": user.tenant})


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


def _range(from_: str | None, to: str | None, default: timedelta) -> tuple[int, int]:
    try:
        to_ms = codec.parse_ts_ms(to, "to") if to else now_ms()
        from_ms = codec.parse_ts_ms(from_, "from") if from_ else to_ms - int(default.total_seconds() * 1000)
    except codec.SampleError as e:
        field = str(e).split(":", 1)[0]
        raise _err422(["query", field], str(e), "datetime_parsing") from None
    if from_ms >= to_ms:
        raise _err422(["query", "from"], "from must be before to", "value_error")
    return from_ms, to_ms


#: the longest history span one request may ask for
HISTORY_MAX_SPAN_DAYS = 731
HISTORY_MAX_SPAN_MS = HISTORY_MAX_SPAN_DAYS * 86_400_000

FromQ = Annotated[
    str | None,
    Query(
        alias="from", description="RFC 3339; default: `to` minus 24 h", examples=["2026-11-24T00:00:00.000Z"]
    ),
]
ToQ = Annotated[
    str | None, Query(description="RFC 3339; default: now", examples=["2026-11-25T00:00:00.000Z"])
]


@router.get(
    "/batteries/{battery_id}/history", response_model=HistoryOut, tags=["fleet"], responses={**E401, **E404}
)
async def history(
    request: Request,
    battery_id: str,
    ts: Tenant,
    from_: FromQ = None,
    to: ToQ = None,
    points: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Response:
    """Downsampled on the server: at most `points` buckets, each with min / max / mean, so spikes survive.
    The span may be at most 2 years (`from` before `to`)."""
    from_ms, to_ms = _range(from_, to, timedelta(hours=24))
    if to_ms - from_ms > HISTORY_MAX_SPAN_MS:
        # even aggregated in SQL, the database scans every minute of the span: bound it
        raise _err422(
            ["query", "from"], f"the span may be at most {HISTORY_MAX_SPAN_DAYS} days", "value_error"
        )
    return json_response(await ts.history(battery_id, from_ms, to_ms, points))


#: model fields the CSV writes in columns of their own (lists expanded or joined, errors as JSON) or not
#: at all (battery_id is the file's name); everything else is a scalar column, in the model's order
_CSV_SPECIAL = ("battery_id", "seq", "ts", "cells_mv", "temps_c", "balancing", "faults", "errors")
_SCALARS = ("source", "via", *(f for f in MEASUREMENT_FIELDS if f not in _CSV_SPECIAL))
# a new list-valued model field needs a decision here (expand? join?): fail at import rather than drop it
if set(_SCALARS) | set(_CSV_SPECIAL) != set(SAMPLE_FIELDS):
    raise ImportError("routes: the CSV columns do not cover trackingbms.model.SAMPLE_FIELDS")


def _csv_header(n_cells: int, n_temps: int) -> list[str]:
    # the published column order (docs/api.md): ts, seq, the scalars, faults, cells, temps, balancing, errors
    return [
        "ts",
        "seq",
        *_SCALARS,
        "faults",
        *(f"cell_{i}_mv" for i in range(1, n_cells + 1)),
        *(f"temp_{i}_c" for i in range(1, n_temps + 1)),
        "balancing",
        "errors",
    ]


def _csv_val(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


@router.get(
    "/batteries/{battery_id}/export.csv",
    tags=["fleet"],
    responses={**E401, **E404, 200: {"content": {"text/csv": {}}, "description": "streamed CSV"}},
)
async def export_csv(battery_id: str, ts: Tenant, from_: FromQ = None, to: ToQ = None) -> StreamingResponse:
    """All samples in the range, oldest first, one row each: cells and temperatures as columns
    (as many as the battery has reported), lists joined with `;`, absent values empty."""
    from_ms, to_ms = _range(from_, to, timedelta(days=7))
    n_cells, n_temps = await ts.export_info(battery_id)

    async def rows() -> AsyncIterator[str]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_csv_header(n_cells, n_temps))
        async for page in ts.export_rows(battery_id, from_ms, to_ms):
            for ts_ms, seq, data in page:
                m = codec.unpack(data)
                cells = m.get("cells_mv") or []
                temps = m.get("temps_c") or []
                w.writerow(
                    [
                        codec.ms_to_ts(ts_ms),
                        seq,
                        *(_csv_val(m.get(k)) for k in _SCALARS),
                        ";".join(m["faults"]) if "faults" in m else "",
                        *(cells[i] if i < len(cells) else "" for i in range(n_cells)),
                        *(temps[i] if i < len(temps) else "" for i in range(n_temps)),
                        ";".join(map(str, m["balancing"])) if "balancing" in m else "",
                        # why a partial sample is partial: {"0x95": "reason"} as JSON text
                        orjson.dumps(m["errors"]).decode() if m.get("errors") else "",
                    ]
                )
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        if buf.tell():
            yield buf.getvalue()

    name = f"{battery_id}.csv"
    return StreamingResponse(
        rows(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


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
async def put_device_config(
    device_id: str, body: DeviceConfigIn, ts: Tenant, _user: Annotated[UserRef, Depends(writer)]
) -> Response:
    """Set a gateway's remote config (admin / operator). It gets a new `config_version` and is handed to
    the gateway in its next heartbeat or ingest reply."""
    return json_response(
        await ts.set_device_config(device_id, body.model_dump(mode="json", exclude_none=True))
    )


@router.websocket("/live")
async def live(websocket: WebSocket, token: str = "") -> None:
    """Pushes `sample` and `heartbeat` messages of the user's tenant (docs/api.md)."""
    store: Store = websocket.app.state.store
    user = await store.user_for_token(token) if token else None
    if user is None:
        await websocket.close(code=4401, reason="unknown, expired or revoked access token")
        return
    await websocket.accept()
    with websocket.app.state.hub.subscribe(user.tenant_id) as q:
        receiver = asyncio.create_task(_drain(websocket))
        try:
            while not receiver.done():
                getter = asyncio.create_task(q.get())
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send_text(orjson.dumps(getter.result()).decode())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so that a disconnect is noticed."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
