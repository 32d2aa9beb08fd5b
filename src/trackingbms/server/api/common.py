"""Shared by the routers: orjson responses, documented error replies, the from / to query range."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import HTTPException, Query
from fastapi.responses import Response

from trackingbms.server.store import now_ms, packing

E401 = {401: {"description": "missing, wrong or revoked token"}}
E404 = {404: {"description": "no such thing in your tenant"}}


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def err422(loc: list[Any], msg: str, typ: str) -> HTTPException:
    return HTTPException(422, [{"loc": loc, "msg": msg, "type": typ}])


FromQ = Annotated[
    str | None,
    Query(
        alias="from",
        description="RFC 3339; default: `to` minus 24 h",
        examples=["2026-11-24T00:00:00.000Z"],
        json_schema_extra={"format": "date-time"},
    ),
]
ToQ = Annotated[
    str | None,
    Query(
        description="RFC 3339; default: now",
        examples=["2026-11-25T00:00:00.000Z"],
        json_schema_extra={"format": "date-time"},
    ),
]


def parse_range(from_: str | None, to: str | None, default: timedelta, ahead_ms: int = 0) -> tuple[int, int]:
    """(from_ms, to_ms) of a request; ``to`` defaults to now (+ ``ahead_ms``), ``from`` to ``to - default``;
    422 if wrong."""
    try:
        to_ms = packing.parse_ts_ms(to, "to") if to else now_ms() + ahead_ms
        from_ms = packing.parse_ts_ms(from_, "from") if from_ else to_ms - int(default.total_seconds() * 1000)
    except packing.SampleError as e:
        field = str(e).split(":", 1)[0]
        raise err422(["query", field], str(e), "datetime_parsing") from None
    if from_ms >= to_ms:
        raise err422(["query", "from"], "from must be before to", "value_error")
    return from_ms, to_ms
