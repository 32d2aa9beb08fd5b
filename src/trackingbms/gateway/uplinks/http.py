"""HTTP(S) transport: ``POST /api/v1/ingest`` and ``/api/v1/heartbeat`` with the device token (docs/api.md).

Maps HTTP statuses to the policy's outcomes; decides nothing itself, with one exception that is about the
address rather than the batch: **421** (this device's tenant lives in another region, docs/scaling.md) carries
the home region's URL, and the transport switches to it at once, says so in the log (once per move) and
resends there. The move lasts until the gateway restarts (the next 421 moves it again); the log line tells
the operator which URL to put in gateway.toml.

TLS contexts: httpx loads certifi's CA bundle into a new context for every client (about 7 MB of the
gateway's RSS for the first, 0.8 MB for each more). Clients of ``https://`` uplinks share one context, built
on first use; a plain ``http://`` uplink gets a context with no CA loaded, which never verifies anything, so
a redirect to https fails closed instead of costing the bundle. (A 421 move builds a new client, with the
context of the new URL.)
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import gzip
import logging
import ssl
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from trackingbms import __version__
from trackingbms.gateway.config import UplinkConfig
from trackingbms.gateway.uplinks.base import Failed, Outcome, Reply, TooLarge, TransportError, Wait

log = logging.getLogger("trackingbms.gateway.uplink")

#: how many 421 moves in a row are followed before giving up (two regions pointing at each other)
MAX_REGION_MOVES = 3


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
        self.token = token
        self.client = self._client(cfg.url)
        self._retired: list[httpx.AsyncClient] = []

    def _client(self, url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=url,
            verify=tls_context(url),
            timeout=self.cfg.timeout_s,
            headers={
                "Authorization": f"Bearer {self.token}",
                "User-Agent": f"trackingbms-gateway/{__version__}",
            },
        )

    async def aclose(self) -> None:
        for client in [*self._retired, self.client]:
            await client.aclose()

    async def send_batch(self, body: bytes, config_version: int) -> Outcome:
        headers = {"Content-Type": "application/json", "X-Config-Version": str(config_version)}
        if self.cfg.gzip:
            headers["Content-Encoding"] = "gzip"
            if len(body) > 100_000:
                body = await asyncio.to_thread(gzip.compress, body, 1)
            else:
                body = gzip.compress(body, compresslevel=1)
        try:
            resp = await self._post("/api/v1/ingest", body, headers)
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
            resp = await self._post(
                "/api/v1/heartbeat", orjson.dumps(body), {"Content-Type": "application/json"}
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

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST, following a 421 to the device's home region (a few moves at most)."""
        for _ in range(MAX_REGION_MOVES):
            resp = await self.client.post(path, content=body, headers=headers)
            target = _home_region_url(resp)
            if target is None or target.rstrip("/") == str(self.client.base_url).rstrip("/"):
                return resp
            region = resp.json().get("region")
            log.warning(
                "uplink %s: %s says this device's tenant lives in region %s: sending to %s from now on "
                "(put url = %r in gateway.toml to skip this hop)",
                self.name,
                self.url,
                region,
                target,
                target,
            )
            self.url = target
            # a new client (the TLS context follows the scheme); the old one may still carry requests in
            # flight, so it is closed with the transport
            self._retired.append(self.client)
            self.client = self._client(target)
        return resp


def _home_region_url(resp: httpx.Response) -> str | None:
    """The URL a 421 names, if it is one this transport can follow (http or https)."""
    if resp.status_code != 421:
        return None
    try:
        url = resp.json().get("url")
    except (ValueError, AttributeError):
        return None
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
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
    if resp.status_code == 421:  # another region, whose address is not known there (yet)
        return f"{what}: served by another region: {_detail(resp)}"
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
