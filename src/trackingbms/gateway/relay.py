"""The gateway's side of the phone relay: hand out unsent samples, take the server's signed receipt back.

When the gateway has no uplink, the web app it serves (docs/architecture.md, "Phone relay") downloads the
unsent samples page by page, uploads them to the server with the user's login (``POST /api/v1/relay``), and
brings back the server's receipt: which (battery, seq) runs the server now has. The gateway believes a
receipt only if its signature checks with the key derived from its own device token
(:func:`trackingbms.model.relay_key`): a random client on the LAN can read what the LAN API shows anyway,
but it cannot make the gateway stop holding unsent data. A receipt that never comes back costs nothing but
bandwidth: the gateway's own later upload of the same samples counts as duplicates at the server.

LAN routes (served by :mod:`trackingbms.gateway.local`, behind its optional LAN token):

- ``GET /local/v1/relay`` — ``device_key`` (which device this is, for the server), the server URLs, how many
  samples are unsent;
- ``GET /local/v1/relay/samples?after=<cursor>&limit=<n>`` — a page of unsent samples, oldest first, with
  ``seq``; ``next`` is the cursor of the following page (null at the end);
- ``/local/v1/relay/receipt`` (WebSocket: the LAN server takes no request bodies) — the client sends the
  receipt as one message, the gateway answers ``{"acked": n}`` or ``{"error": ..., "status": 4xx}``.

Hand-written: a receipt is one HMAC and a JSON shape; no library would be smaller.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState
from trackingbms.model import (
    RELAY_RECEIPT_VERSION,
    is_battery_id,
    relay_key,
    relay_key_id,
    relay_signature_ok,
)

log = logging.getLogger("trackingbms.gateway.relay")

#: samples per page: a 16S sample is ~600 bytes of JSON, so a page stays under ~300 KB on a phone's link
DEFAULT_PAGE = 500
MAX_PAGE = 1000
#: a receipt covers one relay batch (≤ 1000 samples at the server): far fewer runs than this
MAX_RECEIPT_RUNS = 10_000
#: the WebSocket message limit that lets a receipt in (the LAN server's ``max_size``)
MAX_RECEIPT_BYTES = 64 * 1024


class ReceiptError(ValueError):
    """A receipt the gateway refuses; ``status`` is the HTTP-like code reported to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RelayDesk:
    """What the LAN API needs for the relay: the queue, and the key from the device token."""

    def __init__(
        self,
        queue: DurableQueue,
        device_token: str,
        server_urls: Sequence[str] = (),
        state: GatewayState | None = None,
    ) -> None:
        self.queue = queue
        self.state = state  # told when a receipt settles samples: the data took the phone (via)
        self._key = relay_key(device_token)
        self.device_key = relay_key_id(self._key)
        self.server_urls = list(server_urls)

    async def info(self) -> dict[str, Any]:
        status = await self.queue.astatus()
        return {
            "device_key": self.device_key,
            "server_urls": self.server_urls,
            "unsent": status["queue_depth"],
            "oldest_unsent_ts": status["oldest_queued_ts"],
            "page_max": MAX_PAGE,
        }

    async def page(self, after: int, limit: int) -> dict[str, Any]:
        rows = await self.queue.aunsent(after_id=after, limit=limit)
        # bodies are stored as wire JSON: splice them rather than decode and re-encode every sample
        body = b"[" + b",".join(q.body for q in rows) + b"]"
        return {
            "device_key": self.device_key,
            "samples": orjson.Fragment(body),
            "next": rows[-1].id if len(rows) == limit else None,
        }

    async def take_receipt(self, message: str | bytes) -> dict[str, Any]:
        """Check a receipt, let the samples it covers leave the send queue; :class:`ReceiptError` if not."""
        ranges, device = self.verify(message)
        n = await self.queue.asettle_relayed(ranges)
        if n and self.state is not None:
            self.state.note_delivery("phone")
        runs = sum(len(r) for r in ranges.values())
        log.info(
            "relay receipt for device %s: %d unsent samples the server has (%d runs) left the queue",
            device,
            n,
            runs,
        )
        return {"acked": n}

    def verify(self, message: str | bytes) -> tuple[dict[str, list[list[int]]], str]:
        """(battery_id → seq runs, device name) of a receipt signed for this gateway, else ReceiptError."""
        try:
            receipt = orjson.loads(message)
        except orjson.JSONDecodeError:
            raise ReceiptError(
                400, 'a receipt is a JSON object: {"v": 1, "payload": ..., "sig": ...}'
            ) from None
        if not isinstance(receipt, dict) or receipt.get("v") != RELAY_RECEIPT_VERSION:
            raise ReceiptError(400, f"not a relay receipt of version {RELAY_RECEIPT_VERSION}")
        payload, sig = receipt.get("payload"), receipt.get("sig")
        if not isinstance(payload, str) or not isinstance(sig, str):
            raise ReceiptError(400, "a receipt needs payload (text) and sig (hex)")
        if not relay_signature_ok(self._key, payload, sig):
            raise ReceiptError(
                403,
                "receipt not signed for this gateway's device token (another gateway's, altered, or signed "
                "before the token changed): nothing was dropped",
            )
        # signed by the server: a malformed payload is a bug, still refused cleanly
        try:
            body = orjson.loads(payload)
            batteries = body["batteries"]
            if body.get("key_id") != self.device_key or not isinstance(batteries, dict):
                raise ValueError("key_id or batteries")
            ranges: dict[str, list[list[int]]] = {}
            runs = 0
            for bid, pairs in batteries.items():
                if not is_battery_id(bid) or not isinstance(pairs, list):
                    raise ValueError(f"battery {bid!r}")
                for pair in pairs:
                    first, last = pair
                    if type(first) is not int or type(last) is not int or not 0 <= first <= last:
                        raise ValueError(f"run {pair!r}")
                runs += len(pairs)
                ranges[bid] = pairs
            if runs > MAX_RECEIPT_RUNS:
                raise ValueError(f"{runs} runs")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ReceiptError(400, f"receipt payload not understood ({e})") from None
        return ranges, str(body.get("device", "?"))
