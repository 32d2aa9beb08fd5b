"""The local direct API on the LAN: state, history, a live WebSocket stream and a self-contained page.

Served by the ``websockets`` library alone (plain GETs answered in ``process_request``), which keeps the
gateway small (RSS target < 80 MB on a Raspberry Pi class board). Routes:

- ``GET /`` — the live page (no external assets: works with no internet);
- ``GET /local/v1/state`` — gateway status (with ``ble``: the Bluetooth name, address and pairing code when
  ``[ble]`` is on, docs/ble.md) and, per battery, link state and the latest sample;
- ``GET /local/v1/history?since=<RFC 3339>&battery_id=&limit=`` — samples taken here (sent or not);
- ``GET /metrics`` — Prometheus metrics (:mod:`trackingbms.gateway.metrics`);
- ``GET /local/v1/live`` (WebSocket) — ``{"type": "sample", "sample": <as taken>, "latest": <merged>}`` and
  ``{"type": "link", ...}`` events.

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

from trackingbms.gateway.config import LocalApiConfig
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState
from trackingbms.model import format_ts

log = logging.getLogger("trackingbms.gateway.local")


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    return Response(status, HTTPStatus(status).phrase, headers, body)


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
        ble_info: Callable[[], dict[str, Any]] | None = None,
    ):
        self.uplinks = list(uplinks)
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
            max_size=4096,
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
        if path == "/":
            # the page itself carries no data; it asks for the token if one is needed
            lang = page_lang(request.headers.get("Accept-Language"))
            return _response(200, render_page(lang).encode(), "text/html; charset=utf-8")
        if not self._authorized(request, query):
            return _json(401, {"detail": "LAN token required: Authorization: Bearer <token> or ?token="})
        if path == "/local/v1/live":
            return None  # WebSocket handshake proceeds
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
            samples = await self.queue.ahistory(since=since, battery_id=battery_id, limit=limit)
            return _json(200, {"samples": samples})
        return _json(404, {"detail": f"no such path: {url.path}"})

    async def state_body(self) -> dict[str, Any]:
        gateway = await self.gateway_status()
        if self.ble_info is not None:
            gateway["ble"] = self.ble_info()
        return {
            "gateway": gateway,
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


PAGE = """<!doctype html>
<html lang="{{lang}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;background:#f6f7f9;color:#222}
h1{font-size:1.2rem} .packs{display:flex;flex-wrap:wrap;gap:1rem}
.pack{background:#fff;border-radius:8px;padding:.8rem 1rem;min-width:16rem;box-shadow:0 1px 3px #0002}
.pack h2{font-size:1rem;margin:0 0 .4rem} .big{font-size:1.6rem;font-weight:600}
.ok{color:#1a7f37}.degraded{color:#b35900}.asleep{color:#555}.disconnected{color:#c00}
table{border-collapse:collapse;font-size:.9rem} td{padding:1px 8px 1px 0}
.cells span{display:inline-block;margin:1px;padding:1px 3px;background:#eef;border-radius:3px;font-size:.8rem}
.cells span.bal{background:#fd8}
#gw{font-size:.85rem;color:#555}
</style></head><body>
<h1>{{heading}}</h1>
<div id="gw">{{connecting}}</div>
<div class="packs" id="packs"></div>
<script>
const TEXTS = {{texts}};
// the server picked the language from Accept-Language; without that header, the browser's own
const NAV = (navigator.language || "en").slice(0, 2).toLowerCase();
const LANG = "{{picked}}" || (NAV in TEXTS ? NAV : "en");
const T = TEXTS[LANG];
document.documentElement.lang = LANG;
document.title = T.title;
const packs = {};
document.querySelector("h1").textContent = T.heading;
document.getElementById("gw").textContent = T.connecting;
const qs = new URLSearchParams(location.search);
let token = qs.get("token") || localStorage.getItem("tbms_lan_token") || "";
function esc(s){return String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]))}
const DIGITS=d=>({minimumFractionDigits:d,maximumFractionDigits:d});
function fmt(v,d,u){return v===undefined||v===null?"–":Number(v).toLocaleString(LANG,DIGITS(d))+" "+u}
function word(group,v){return (T[group]&&T[group][v])||v}
function render(){
  const root=document.getElementById("packs");
  root.innerHTML=Object.values(packs).map(p=>{
    const s=p.latest||{}; const cells=s.cells_mv||[]; const bal=new Set(s.balancing||[]);
    const power=(s.voltage_v!=null&&s.current_a!=null)?s.voltage_v*s.current_a:null;
    return `<div class="pack" data-battery="${esc(p.battery_id)}"><h2>${esc(p.battery_id)}
      <span class="${esc(p.link_state)}">● ${esc(word("links",p.link_state))}</span></h2>
      <div class="big">${fmt(s.soc_pct,1,"%")}</div>
      <table><tr><td>${T.voltage}</td><td class="v">${fmt(s.voltage_v,2,"V")}</td></tr>
      <tr><td>${T.current}</td><td class="a">${fmt(s.current_a,1,"A")}</td></tr>
      <tr><td>${T.power}</td><td>${fmt(power,0,"W")}</td></tr>
      <tr><td>${T.state}</td><td>${esc(word("states",s.state||"–"))}</td></tr>
      <tr><td>${T.temps}</td><td>${(s.temps_c||[]).map(t=>t.toFixed(0)+" °C").join(" ")||"–"}</td></tr>
      <tr><td>${T.faults}</td><td>${esc((s.faults||[]).join(", ")||T.none)}</td></tr>
      <tr><td>${T.updated}</td><td>${esc(s.ts||"–")}</td></tr></table>
      <div class="cells">${cells.map((c,i)=>
        `<span class="${bal.has(i+1)?"bal":""}">${i+1}: ${c}</span>`).join("")}</div>
      ${p.last_error&&p.link_state!=="ok"?`<div class="${esc(p.link_state)}">${esc(p.last_error)}</div>`:""}
    </div>`}).join("");
}
function connect(){
  const url=(location.protocol==="https:"?"wss://":"ws://")+location.host+"/local/v1/live"+(token?"?token="+encodeURIComponent(token):"");
  const ws=new WebSocket(url);
  ws.onmessage=ev=>{
    const m=JSON.parse(ev.data);
    if(m.type==="state"){
      for(const b of m.batteries) packs[b.battery_id]=b;
      const g=m.gateway; document.getElementById("gw").textContent=
        `${T.uplink} ${g.uplink} · ${T.queue} ${g.queue_depth} · ${T.disk} ${g.disk_used_pct} %`+
        ` · ${T.up} ${Math.round(g.uptime_s)} s`+
        (g.ble?` · Bluetooth ${g.ble.name} · ${T.pairing} ${g.ble.pairing_code}`:"");
    } else if(m.type==="sample"){
      const p=packs[m.battery_id]||(packs[m.battery_id]={battery_id:m.battery_id});
      p.latest=m.latest||m.sample;  // merged: a partial sample does not blank cells / temps / faults
    }
    else if(m.type==="link"){
      Object.assign(packs[m.battery_id]||(packs[m.battery_id]={}), m.status);
    }
    render();
  };
  ws.onclose=ev=>{
    if(ev.code===1006&&!token){ /* maybe a token is needed */ }
    document.getElementById("gw").textContent=T.disconnected;
    setTimeout(connect,2000);
  };
}
fetch("/local/v1/state"+(token?"?token="+encodeURIComponent(token):"")).then(r=>{
  if(r.status===401){ token=prompt(T.token)||""; localStorage.setItem("tbms_lan_token",token); }
}).finally(connect);
</script></body></html>
"""

#: the page's words in English and French: a small table here, as the gateway must not import the server
#: (whose dashboard catalogues are much larger); units and the BMS's fault names stay as they are
PAGE_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "title": "TrackingBMS gateway",
        "heading": "TrackingBMS gateway — live packs",
        "connecting": "connecting…",
        "disconnected": "disconnected from the gateway, retrying…",
        "token": "LAN token",
        "voltage": "voltage",
        "current": "current",
        "power": "power",
        "state": "state",
        "temps": "temps",
        "faults": "faults",
        "none": "none",
        "updated": "updated",
        "uplink": "uplink",
        "queue": "queue",
        "disk": "disk",
        "up": "up",
        "pairing": "pairing code",
        "links": {"ok": "ok", "degraded": "degraded", "asleep": "asleep", "disconnected": "disconnected"},
        "states": {"idle": "idle", "charging": "charging", "discharging": "discharging"},
    },
    "fr": {
        "title": "Passerelle TrackingBMS",
        "heading": "Passerelle TrackingBMS — batteries en direct",
        "connecting": "connexion…",
        "disconnected": "déconnecté de la passerelle, nouvelle tentative…",
        "token": "Jeton réseau local",
        "voltage": "tension",
        "current": "courant",
        "power": "puissance",
        "state": "état",
        "temps": "températures",
        "faults": "défauts",
        "none": "aucun",
        "updated": "mis à jour",
        "uplink": "liaison montante",
        "queue": "file",
        "disk": "disque",
        "up": "en service depuis",
        "pairing": "code d'appairage",
        "links": {"ok": "ok", "degraded": "dégradée", "asleep": "en veille", "disconnected": "déconnectée"},
        "states": {"idle": "au repos", "charging": "en charge", "discharging": "en décharge"},
    },
}


def page_lang(accept_language: str | None) -> str | None:
    """The first language of ``Accept-Language`` the page has (q-values ignored: browsers list by
    preference), English if none; None without the header (the page then asks ``navigator.language``)."""
    if not accept_language:
        return None
    for part in accept_language.split(","):
        base = part.split(";")[0].strip()[:2].lower()
        if base in PAGE_TEXT:
            return base
    return "en"


def render_page(lang: str | None) -> str:
    """The LAN page with its static words in ``lang`` (English until the script decides when None)."""
    words = PAGE_TEXT[lang or "en"]
    page = PAGE
    for key in ("title", "heading", "connecting"):
        page = page.replace("{{" + key + "}}", words[key])
    texts = {lang: words} if lang else PAGE_TEXT  # both only when the browser's language is still unknown
    page = page.replace("{{texts}}", orjson.dumps(texts).decode().replace("</", "<\\/"))
    return page.replace("{{lang}}", lang or "en").replace("{{picked}}", lang or "")
