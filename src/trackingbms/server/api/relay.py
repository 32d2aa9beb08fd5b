"""``POST /relay``: a phone carries a gateway's unsent samples to the server (docs/api.md "Phone relay").

The same door as the gateway's own uploads (:class:`~trackingbms.server.ingest.IngestService`: one validation,
one dedup by (device, battery, seq)), on behalf of the device the gateway's relay key names in the user's
tenant, with ``via = "phone"``. The reply carries a receipt signed with the device's key
(:func:`trackingbms.model.relay_signature`) for the phone to hand back to the gateway.
"""

from __future__ import annotations

import math
from collections import defaultdict

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from trackingbms.model import RELAY_RECEIPT_VERSION, format_ts, relay_signature, seq_ranges, utc_now
from trackingbms.server.api.common import E401, E404, err422, json_response
from trackingbms.server.api.deps import Ingest, Tenant, Writer
from trackingbms.server.api.ingest import gunzip, read_body
from trackingbms.server.schemas import RELAY_MAX_SAMPLES, RelayReply
from trackingbms.server.store import now_ms

router = APIRouter()

_RELAY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RelayBatch"}}},
    }
}


@router.post(
    "/relay",
    response_model=RelayReply,
    tags=["relay"],
    summary="Store a gateway's unsent samples carried by a phone (via = phone), get a receipt",
    openapi_extra=_RELAY_BODY,
    responses={
        **E401,
        403: {"description": "your role may not write"},
        **E404,
        413: {"description": "body or batch too large"},
        422: {"description": "body is not a relay batch"},
        429: {"description": "rate-limited; see Retry-After"},
    },
)
async def relay(request: Request, user: Writer, tenant: Tenant, service: Ingest) -> Response:
    """Samples are checked one by one as in `POST /ingest`; re-relayed samples and samples the gateway
    already uploaded count as duplicates. The receipt covers every sample now on the server (accepted or
    duplicate), never a rejected one."""
    settings = request.app.state.settings
    body = await read_body(request, settings.max_body_bytes)
    if "gzip" in request.headers.get("content-encoding", "").lower():
        body = gunzip(body, settings.max_decoded_bytes)
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise err422(["body"], f"invalid JSON: {e}", "json_invalid") from None
    if not isinstance(obj, dict):
        raise err422(["body"], 'the body is {"device_key": "...", "samples": [...]}', "model_type")
    key_id, batch = obj.get("device_key"), obj.get("samples")
    if not isinstance(key_id, str) or not key_id or len(key_id) > 64:
        raise err422(
            ["body", "device_key"], "device_key: the gateway's relay key (GET /local/v1/relay)", "missing"
        )
    if not isinstance(batch, list):
        raise err422(["body", "samples"], "Input should be a valid list", "list_type")
    if len(batch) > RELAY_MAX_SAMPLES:
        raise HTTPException(413, f"at most {RELAY_MAX_SAMPLES} samples per relay request, got {len(batch)}")
    device, key = await tenant.relay_device(key_id)  # NotFound → 404
    wait = request.app.state.limiter.take(device.id)  # the device's own bucket: one budget per device
    if wait > 0:
        raise HTTPException(
            429, "rate limit: slow down", headers={"Retry-After": str(max(1, math.ceil(wait)))}
        )
    for sample in batch:
        if isinstance(sample, dict):
            sample["via"] = "phone"  # how these reached the server, whatever the page said
    res = await service.ingest(device, batch, now_ms(), transport="phone")
    refused = {r["index"] for r in res.rejected}
    have: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(batch):
        if i not in refused:  # validated: battery_id is a battery of this device, seq an integer
            have[sample["battery_id"]].append(sample["seq"])
    payload = orjson.dumps(
        {
            "v": RELAY_RECEIPT_VERSION,
            "device": device.name,
            "key_id": key_id,
            "issued": format_ts(utc_now()),
            "by": user.email,
            "batteries": {bid: seq_ranges(seqs) for bid, seqs in have.items()},
        }
    ).decode()
    receipt = {"v": RELAY_RECEIPT_VERSION, "payload": payload, "sig": relay_signature(key, payload)}
    return json_response(
        {
            "device": device.name,
            "accepted": res.accepted,
            "duplicates": res.duplicates,
            "rejected": res.rejected,
            "receipt": receipt,
        }
    )
