"""HTTP(S) transport: ``POST /api/v1/ingest`` and ``/api/v1/heartbeat`` with the device token (docs/api.md).

Maps HTTP statuses to the policy's outcomes; decides nothing itself.

TLS contexts: httpx loads certifi's CA bundle into a new context for every client (about 7 MB of the
gateway's RSS for the first, 0.8 MB for each more). Clients of ``https://`` uplinks share one context, built
on first use; a plain ``http://`` uplink gets a context with no CA loaded, which never verifies anything, so
a redirect to https fails closed instead of costing the bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gzip
import ssl
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from trackingbms import __version__
from trackingbms.gateway.config import UplinkConfig
from trackingbms.gateway.uplinks.base import Failed, Outcome, Reply, TooLarge, TransportError, Wait


@functools.cache
def _verified_tls() -> ssl.SSLContext:
    """The one context every https:// uplink shares (certifi's CA bundle, as httpx would load)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def tls_context(url: str) -> ssl.SSLContext:
    if url.lower().startswith("https://"):
        return _verified_tls()
    # plain HTTP: no CA loaded, so this context rejects every certificate (a redirect to https fails)
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class HttpTransport:
    def __init__(self, cfg: UplinkConfig, token: str):
        self.cfg = cfg
        self.name = cfg.name
        self.url = cfg.url
        self.client = httpx.AsyncClient(
            base_url=cfg.url,
            verify=tls_context(cfg.url),
            timeout=cfg.timeout_s,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"trackingbms-gateway/{__version__}"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send_batch(self, body: bytes, config_version: int) -> Outcome:
        headers = {"Content-Type": "application/json", "X-Config-Version": str(config_version)}
        if self.cfg.gzip:
            headers["Content-Encoding"] = "gzip"
            if len(body) > 100_000:
                body = await asyncio.to_thread(gzip.compress, body, 1)
            else:
                body = gzip.compress(body, compresslevel=1)
        try:
            resp = await self.client.post("/api/v1/ingest", content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Failed(describe(exc))
        status = resp.status_code
        if status == 200:
            try:
                reply = resp.json()
                if not isinstance(reply, dict) or "accepted" not in reply:
                    raise ValueError("not an ingest reply")
            except ValueError:
                # e.g. a captive portal answering 200: nothing was stored, so nothing leaves the queue
                return Failed(f"ingest: 200 but not an ingest reply ({resp.text[:80]!r})")
            return Reply(reply)
        if status == 429:
            return Wait(retry_after_s(resp.headers.get("Retry-After")))
        if status in (413, 422):
            return TooLarge(status, _detail(resp))
        return Failed(_http_error(resp))

    async def heartbeat(self, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resp = await self.client.post(
                "/api/v1/heartbeat", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise TransportError(describe(exc)) from exc
        if resp.status_code != 200:
            raise TransportError(_http_error(resp))
        with contextlib.suppress(ValueError):
            reply = resp.json()
            if isinstance(reply, dict):
                return reply
        return None


def retry_after_s(value: str | None) -> float:
    if not value:
        return 5.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return 5.0


def describe(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect (connection refused)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({exc.__class__.__name__})"
    return f"{exc.__class__.__name__}: {exc}"


def _http_error(resp: httpx.Response) -> str:
    what = "heartbeat" if resp.request.url.path.endswith("/heartbeat") else "ingest"
    if resp.status_code in (401, 403):
        return f"device token refused ({resp.status_code}: {_detail(resp)}); check device_token"
    return f"{what}: HTTP {resp.status_code}: {_detail(resp)}"


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:300]
    return str(data)[:200]
