"""``/live``: a WebSocket pushing the user's tenant's samples and heartbeats as they arrive."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trackingbms.server.store import Store

router = APIRouter()


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
