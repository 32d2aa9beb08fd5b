"""``/live``: a WebSocket pushing the user's tenant's samples and heartbeats as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from trackingbms.server import security
from trackingbms.server.store import Store

router = APIRouter()
log = logging.getLogger(__name__)


@router.websocket("/live")
async def live(websocket: WebSocket, token: str = "") -> None:
    """Pushes `sample` and `heartbeat` messages of the user's tenant (docs/api.md)."""
    store: Store = websocket.app.state.store
    user = await store.user_for_token(token) if token else None
    if user is None:
        await websocket.close(code=4401, reason="unknown, expired or revoked access token")
        return
    await websocket.accept()
    state = websocket.app.state
    with (
        state.hub.subscribe(user.tenant_id) as q,
        state.live_sessions.open(security.token_hash(token)) as ended,
    ):
        receiver = asyncio.create_task(_drain(websocket))
        watcher = asyncio.create_task(_watch(store, token, ended, state.settings.live_token_recheck_s))
        try:
            while not receiver.done() and not watcher.done():
                getter = asyncio.create_task(q.get())
                done, _ = await asyncio.wait({getter, receiver, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send_text(orjson.dumps(getter.result()).decode())
            if watcher.done():  # the token was revoked or has expired: the session is over
                await websocket.close(code=4401, reason="access token revoked or expired")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in (receiver, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _watch(store: Store, token: str, ended: asyncio.Event, every_s: float) -> None:
    """Return when the session ends: a logout here sets ``ended``; a revocation elsewhere (admin command,
    another server process) or the expiry is seen at the next re-check."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), every_s)
        if ended.is_set():
            return
        try:
            if await store.user_for_token(token) is None:
                return
        except Exception:  # the database is unreachable for a moment: keep the session, check again later
            log.warning("live: could not re-check a session's token", exc_info=True)


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so that a disconnect is noticed."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
