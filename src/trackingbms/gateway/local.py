"""The local direct API on the LAN: state, history, a live WebSocket stream, and the web app in direct mode.

Served by the ``websockets`` library alone (plain GETs answered in ``process_request``), which keeps the
gateway small (RSS target < 80 MB on a Raspberry Pi class board). Routes:

- ``GET /``, ``/sw.js``, ``/manifest.webmanifest``, ``/static/*`` — the same web app the server serves
  (:mod:`trackingbms.webapp`, no external assets: works with no internet); served from here it finds
  ``/local/v1/state`` and runs in direct mode until the server is reachable (docs/architecture.md);
- ``GET /local/v1/state`` — gateway status (uplinks in priority order, the path the data took, the server
  URLs the app may switch to; ``ble``: the Bluetooth name, address and pairing code when ``[ble]`` is on,
  docs/ble.md), per battery link state and the latest sample;
- ``GET /local/v1/history?since=<RFC 3339>&battery_id=&limit=&newest=1`` — samples taken here (sent or not),
  oldest first: the first ``limit`` from ``since``, or with ``newest=1`` the last ``limit`` (the phone's
  backfill of its history);
- ``GET /metrics`` — Prometheus metrics (:mod:`trackingbms.gateway.metrics`);
- ``GET /local/v1/live`` (WebSocket) — ``{"type": "sample", "sample": <as taken>, "latest": <merged>}`` and
  ``{"type": "link", ...}`` events;
- ``/local/v1/relay``, ``/local/v1/relay/samples``, ``/local/v1/relay/receipt`` (WebSocket) — the phone relay
  (:mod:`trackingbms.gateway.relay`).

``latest`` (in the state and the live events) is merged field by field: the newest value of each field, so
the partial samples of most polls (no cells, temps or faults) do not blank what the last full one showed.

With ``local_api.token`` set, every route needs ``Authorization: Bearer <token>`` or ``?token=<token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trackingbms import webapp
from trackingbms.gateway.config import LocalApiConfig
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.relay import DEFAULT_PAGE, MAX_PAGE, MAX_RECEIPT_BYTES, ReceiptError, RelayDesk
from trackingbms.gateway.state import GatewayState
from trackingbms.model import format_ts

log = logging.getLogger("trackingbms.gateway.local")


#: the server's policy (server/guard.py) but for connect-src: from here the app also talks to the server it
#: reports to (server mode, the phone relay), whose address only the gateway's configuration knows
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https: ws: wss:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; worker-src 'self'; manifest-src 'self'"
)


def _response(status: int, body: bytes, content_type: str, cache: str = "no-store") -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = cache
    headers["X-Content-Type-Options"] = "nosniff"
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
    return Response(status, HTTPStatus(status).phrase, headers, body)


def _static(path: str) -> Response | None:
    """A file of the web app, or None when ``path`` is not one of its paths."""
    file = webapp.locate(path)
    if file is None:
        return None
    # the shell revalidates every time (an upgraded gateway reaches the phone at once); the service
    # worker keeps its own copy for offline use
    cache = "no-cache" if webapp.no_cache(path) else "max-age=300"
    return _response(200, file.read_bytes(), webapp.content_type(file), cache)


def _json(status: int, data: Any) -> Response:
    return _response(status, orjson.dumps(data), "application/json")


class LocalApi:
    def __init__(
        self,
        cfg: LocalApiConfig,
        state: GatewayState,
        queue: DurableQueue,
        gateway_status: Callable[[], Awaitable[dict[str, Any]]],
        uplinks: Sequence[str] = (),
        server_urls: Sequence[str] = (),
        relay: RelayDesk | None = None,
        ble_info: Callable[[], dict[str, Any]] | None = None,
    ):
        self.uplinks = list(uplinks)
        #: where the server's dashboard is (the app switches to server mode there when it answers)
        self.server_urls = list(server_urls)
        self.relay = relay
        #: the Bluetooth service's name, address and pairing code (docs/ble.md), when [ble] is on
        self.ble_info = ble_info
        self.cfg = cfg
        self.state = state
        self.queue = queue
        self.gateway_status = gateway_status
        self.server: Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self.server = await serve(
            self._ws_handler,
            self.cfg.host,
            self.cfg.port,
            process_request=self._process_request,
            compression=None,
            max_size=MAX_RECEIPT_BYTES,  # a relay receipt; the live socket reads nothing
        )
        log.info("local API on http://%s:%d/", self.cfg.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.server.wait_closed()

    def _authorized(self, request: Request, query: dict[str, list[str]]) -> bool:
        if not self.cfg.token:
            return True
        given = (query.get("token") or [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        if path == "/" or path in webapp.ROOT_FILES or path.startswith("/static/"):
            # the app's files carry no data (the app asks for the LAN token when one is needed)
            found = _static(url.path if path != "/" else "/")
            return found or _json(404, {"detail": f"no such file: {url.path}"})
        if not self._authorized(request, query):
            return _json(401, {"detail": "LAN token required: Authorization: Bearer <token> or ?token="})
        if path in ("/local/v1/live", "/local/v1/relay/receipt"):
            return None  # WebSocket handshake proceeds
        if path.startswith("/local/v1/relay"):
            return await self._relay_request(path, query)
        if path == "/local/v1/state":
            return _json(200, await self.state_body())
        if path == "/metrics":
            from trackingbms.gateway import metrics

            body = metrics.render(await self.gateway_status(), self.state.batteries.values(), self.uplinks)
            return _response(200, body, metrics.CONTENT_TYPE)
        if path == "/local/v1/history":
            since = (query.get("since") or [None])[0]
            battery_id = (query.get("battery_id") or [None])[0]
            try:
                limit = min(10000, max(1, int((query.get("limit") or ["1000"])[0])))
            except ValueError:
                return _json(400, {"detail": "limit must be an integer"})
            if since is not None:
                try:
                    when = datetime.fromisoformat(since.replace("Z", "+00:00").replace(" ", "+"))
                    if when.tzinfo is None:
                        raise ValueError("no timezone")
                except ValueError:
                    return _json(400, {"detail": "since must be an RFC 3339 time, e.g. 2026-11-24T10:00:00Z"})
                since = format_ts(when)  # the stored form, so text order is time order
            # up to 10,000 rows to read and decode: on the queue's thread, not the event loop
            newest = (query.get("newest") or ["0"])[0] in ("1", "true")
            samples = await self.queue.ahistory(
                since=since, battery_id=battery_id, limit=limit, newest=newest
            )
            return _json(200, {"samples": samples})
        return _json(404, {"detail": f"no such path: {url.path}"})

    async def _relay_request(self, path: str, query: dict[str, list[str]]) -> Response:
        if self.relay is None:
            return _json(404, {"detail": "the phone relay is off on this gateway"})
        if path == "/local/v1/relay":
            return _json(200, await self.relay.info())
        if path == "/local/v1/relay/samples":
            try:
                after = int((query.get("after") or ["0"])[0])
                limit = min(MAX_PAGE, max(1, int((query.get("limit") or [str(DEFAULT_PAGE)])[0])))
            except ValueError:
                return _json(400, {"detail": "after and limit must be integers"})
            return _json(200, await self.relay.page(after, limit))
        return _json(404, {"detail": f"no such path: {path}"})

    async def _take_receipt(self, ws: ServerConnection) -> None:
        """One receipt in, one answer out (see :mod:`trackingbms.gateway.relay`)."""
        try:
            message = await ws.recv()
            if self.relay is None:
                raise ReceiptError(404, "the phone relay is off on this gateway")
            answer = await self.relay.take_receipt(message)
        except ReceiptError as e:
            answer = {"error": str(e), "status": e.status}
        except ConnectionClosed:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps(answer).decode())
            await ws.close()

    async def state_body(self) -> dict[str, Any]:
        gateway = await self.gateway_status()
        if self.ble_info is not None:
            gateway["ble"] = self.ble_info()
        return {
            "gateway": {**gateway, "server_urls": self.server_urls},
            "batteries": [
                {
                    **b.heartbeat_entry(),
                    "port": b.port,
                    "poll_interval_s": b.poll_interval_s,
                    "latest": b.latest,
                }
                for b in self.state.batteries.values()
            ],
        }

    async def _ws_handler(self, ws: ServerConnection) -> None:
        if ws.request is not None and urlsplit(ws.request.path).path.rstrip("/") == "/local/v1/relay/receipt":
            await self._take_receipt(ws)
            return
        q = self.state.subscribe()
        try:
            await ws.send(orjson.dumps({"type": "state", **(await self.state_body())}).decode())
            while True:
                event = await q.get()
                await ws.send(orjson.dumps(event).decode())
        except ConnectionClosed:
            pass
        finally:
            self.state.unsubscribe(q)
