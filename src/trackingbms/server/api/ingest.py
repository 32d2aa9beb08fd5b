"""``POST /ingest``: the HTTP door to the ingest service (body limits, gzip, rate limit, config handshake)."""

from __future__ import annotations

import math
import zlib
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from trackingbms.server.api.common import E401, err422, json_response
from trackingbms.server.api.deps import CurrentDevice, Ingest, StoreDep
from trackingbms.server.schemas import IngestReply
from trackingbms.server.store import now_ms

router = APIRouter()


async def read_body(request: Request, limit: int) -> bytes:
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


def gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit)
    except zlib.error:
        raise err422(["body"], "body is not valid gzip", "gzip_invalid") from None
    if d.unconsumed_tail:
        raise HTTPException(413, f"body larger than {limit} bytes once decompressed")
    return out


_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestBatch"}}},
    },
    "parameters": [
        {
            "name": "X-Config-Version",
            "in": "header",
            "required": False,
            "description": "the config version the gateway runs (anything else is ignored)",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        }
    ],
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
        503: {"description": "cluster mode: no commit confirmed in time; send again (Retry-After)"},
    },
)
async def ingest(request: Request, device: CurrentDevice, service: Ingest, store: StoreDep) -> Response:
    """Samples are checked one by one: a sample that can never be valid is rejected with its index and
    the field at fault, the rest is stored. Re-sent samples count as duplicates. The reply comes after
    the commit. Send `X-Config-Version` (the config the gateway runs) to get `config` only when newer."""
    app = request.app
    settings = app.state.settings
    wait = await app.state.limiter.acquire(device.id)
    if wait > 0:
        raise HTTPException(
            429, "rate limit: slow down", headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    body = await read_body(request, settings.max_body_bytes)
    if "gzip" in request.headers.get("content-encoding", "").lower():
        body = gunzip(body, settings.max_decoded_bytes)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise err422(["body"], f"invalid JSON: {e}", "json_invalid") from None
    if not isinstance(obj, dict) or "samples" not in obj:
        raise err422(["body", "samples"], 'Field required: the body is {"samples": [...]}', "missing")
    batch = obj["samples"]
    if not isinstance(batch, list):
        raise err422(["body", "samples"], "Input should be a valid list", "list_type")
    if len(batch) > settings.max_batch_samples:
        raise HTTPException(413, f"at most {settings.max_batch_samples} samples per batch, got {len(batch)}")
    header = request.headers.get("x-config-version", "")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses (after the commit!)
    reported = int(header) if header.isascii() and header.isdigit() and len(header) < 10 else None
    handoff = app.state.handoff
    if handoff is not None and handoff.can_carry(device.tenant_id, device.name):
        return await _via_jetstream(handoff, device, batch, reported)
    res = await service.ingest(device, batch, now_ms())
    if reported is not None and reported != device.reported_config_version:
        await store.note_config_version(device, reported)
    reply: dict[str, Any] = {"accepted": res.accepted, "duplicates": res.duplicates, "rejected": res.rejected}
    cfg = device.pending_config(reported)
    if cfg is not None:
        reply["config"] = cfg
    return json_response(reply)


async def _via_jetstream(handoff: Any, device: Any, batch: list[Any], reported: int | None) -> Response:
    """Cluster mode (trackingbms.server.handoff): the ingest worker stores the batch; its reply is ours."""
    from trackingbms.server.handoff import NotCommitted, TooLargeForQueue

    try:
        reply = await handoff.ingest(device.tenant_id, device.name, batch, reported)
    except NotCommitted as e:
        raise HTTPException(503, f"{e}: send the batch again", headers={"Retry-After": "2"}) from None
    except TooLargeForQueue as e:  # the gateway halves the batch
        raise HTTPException(413, str(e)) from None
    if "status" in reply:  # refused whole by the worker (it checks what this process checked: rare)
        raise HTTPException(int(reply["status"]), str(reply.get("error", "refused")))
    return json_response(reply)
