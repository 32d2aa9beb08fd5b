"""A battery's history (downsampled on the server) and its raw samples as CSV or Parquet."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from trackingbms.server import parquet
from trackingbms.server.api.common import E401, E404, FromQ, ToQ, err422, json_response, parse_range
from trackingbms.server.api.deps import Tenant
from trackingbms.server.schemas import HistoryOut
from trackingbms.server.store import packing

#: an export without ``to`` ends this far past now: ingest accepts samples up to a clock skew ahead (a gateway
#: clock a little fast), and "everything until now" must not leave out samples it has acknowledged
EXPORT_AHEAD_MS = packing.MAX_FUTURE_SKEW_MS

router = APIRouter()

#: the longest history span one request may ask for
HISTORY_MAX_SPAN_DAYS = 731
HISTORY_MAX_SPAN_MS = HISTORY_MAX_SPAN_DAYS * 86_400_000


@router.get(
    "/batteries/{battery_id}/history", response_model=HistoryOut, tags=["fleet"], responses={**E401, **E404}
)
async def history(
    battery_id: str,
    ts: Tenant,
    from_: FromQ = None,
    to: ToQ = None,
    points: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Response:
    """Downsampled on the server: at most `points` buckets, each with min / max / mean, so spikes survive.
    The span may be at most 2 years (`from` before `to`)."""
    from_ms, to_ms = parse_range(from_, to, timedelta(hours=24))
    if to_ms - from_ms > HISTORY_MAX_SPAN_MS:
        # even aggregated in SQL, the database scans every minute of the span: bound it
        raise err422(
            ["query", "from"], f"the span may be at most {HISTORY_MAX_SPAN_DAYS} days", "value_error"
        )
    return json_response(await ts.history(battery_id, from_ms, to_ms, points))


@router.get(
    "/batteries/{battery_id}/export.csv",
    tags=["fleet"],
    responses={**E401, **E404, 200: {"content": {"text/csv": {}}, "description": "streamed CSV"}},
)
async def export_csv(battery_id: str, ts: Tenant, from_: FromQ = None, to: ToQ = None) -> StreamingResponse:
    """All samples in the range, oldest first, one row each: cells and temperatures as columns
    (as many as the battery has reported), lists joined with `;`, absent values empty."""
    from_ms, to_ms = parse_range(from_, to, timedelta(days=7), EXPORT_AHEAD_MS)
    n_cells, n_temps = await ts.export_info(battery_id)  # 404 before the stream starts
    name = f"{battery_id}.csv"
    return StreamingResponse(
        ts.export_csv(battery_id, from_ms, to_ms, n_cells, n_temps),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/batteries/{battery_id}/export.parquet",
    tags=["fleet"],
    responses={
        **E401,
        **E404,
        200: {"content": {parquet.MEDIA_TYPE: {}}, "description": "Parquet file"},
        501: {"description": "pyarrow is not installed"},
    },
)
async def export_parquet(battery_id: str, ts: Tenant, from_: FromQ = None, to: ToQ = None) -> Response:
    """The CSV export's rows with typed columns (docs/api.md): timestamps as timestamps, cells,
    temperatures, balancing and faults as list columns, nulls where a value is absent."""
    try:
        parquet.require()
    except parquet.ParquetUnavailable as exc:
        raise HTTPException(501, str(exc)) from None
    from_ms, to_ms = parse_range(from_, to, timedelta(days=7), EXPORT_AHEAD_MS)
    await ts.export_info(battery_id)  # 404 before reading
    rows = [row async for page in ts.export_rows(battery_id, from_ms, to_ms) for row in page]
    # building and compressing the file is CPU work: off the event loop
    body = await asyncio.to_thread(lambda: parquet.to_bytes(parquet.table(battery_id, rows, packing.unpack)))
    name = f"{battery_id}.parquet"
    return Response(
        body, media_type=parquet.MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
