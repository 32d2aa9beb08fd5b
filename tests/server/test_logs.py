"""Tokens never reach the server's logs: the live WebSocket takes its token in the query string, which
uvicorn writes into its request lines (HTTP: uvicorn.access, WebSocket handshakes: uvicorn.error)."""

from __future__ import annotations

import logging

import httpx
import pytest
import websockets

from .conftest import World


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_request_lines_do_not_carry_tokens(world: World) -> None:
    collect = _Collect()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # the test server logs at warning: let its request lines through, to us
        lg.setLevel(logging.INFO)
        lg.addHandler(collect)
    wrong = "tbu_not-a-real-token-0123456789"
    url = world.base_url.replace("http", "ws") + "/api/v1/live"
    try:
        async with websockets.connect(f"{url}?token={world.a.viewer}"):
            pass
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{url}?token={wrong}"):
                pass
        async with httpx.AsyncClient(base_url=world.base_url) as c:
            await c.get("/api/v1/live", params={"x": "1", "token": world.a.admin})
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(collect)
            lg.setLevel(level)
    lines = [line for line in collect.lines if "/api/v1/live" in line]
    # the three requests were logged (HTTP line and both handshakes), with the token blanked
    assert len(lines) >= 3, collect.lines
    assert all("token=[redacted]" in line for line in lines), lines
    for secret in (world.a.viewer, world.a.admin, wrong):
        assert not any(secret in line for line in collect.lines)
