"""The ingest service, independent of the transport: HTTP today, MQTT / JetStream workers through the same
door. One call validates a batch sample by sample, stores it idempotently (dedup on stream and seq), merges
the last known state, commits, then publishes the newest sample per battery to live subscribers and
tells the alarm service that samples were stored (it reads them back from the database, off the request).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from trackingbms.server.hub import Hub
from trackingbms.server.store import DeviceRef, IngestResult, Store, now_ms, packing

if TYPE_CHECKING:
    from trackingbms.server.alarms import AlarmService
    from trackingbms.server.metrics import ServerMetrics

__all__ = ["IngestResult", "IngestService"]

log = logging.getLogger(__name__)


class IngestService:
    def __init__(
        self,
        store: Store,
        hub: Hub | None = None,
        max_future_ms: int = packing.MAX_FUTURE_SKEW_MS,
        alarms: AlarmService | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        #: samples further ahead of the server's clock are rejected (a wrong device clock)
        self.max_future_ms = max_future_ms
        self.alarms = alarms
        self.metrics = metrics

    async def ingest(
        self,
        device: DeviceRef,
        raw_samples: list[Any],
        received_ms: int | None = None,
        transport: str = "http",
    ) -> IngestResult:
        """Samples are checked one by one: one that can never be valid is rejected with its index and the
        field at fault, the rest is stored. Returns after the commit (then a device may drop its copy)."""
        started = time.perf_counter()
        t_now = received_ms or now_ms()
        parsed, rejected = packing.validate_batch(raw_samples, t_now, self.max_future_ms)
        res = await self.store.store_samples(device, parsed, t_now)
        if rejected:
            res.rejected = sorted(rejected + res.rejected, key=lambda r: r["index"])
        if res.rejected:
            log.info(
                "device %s: %d of %d samples rejected, first: %s",
                device.name,
                len(res.rejected),
                len(raw_samples),
                res.rejected[0]["error"],
                extra={
                    "device": device.name,
                    "tenant": device.tenant_id,
                    "accepted": res.accepted,
                    "duplicates": res.duplicates,
                    "rejected": len(res.rejected),
                },
            )
        if self.metrics is not None:
            errors = [r["error"] for r in res.rejected]
            self.metrics.observe_ingest(
                res.accepted, res.duplicates, errors, time.perf_counter() - started, transport
            )
        if self.alarms is not None and res.accepted:
            self.alarms.stored()  # the process holding the alarm feed reads them from the database
        if self.hub is not None:
            for bid, sample in res.latest.items():
                self.hub.publish(
                    device.tenant_id,
                    {
                        "type": "sample",
                        "battery_id": bid,
                        "sample": sample,
                        "connectivity": self.store.live_connectivity(sample, t_now),
                    },
                )
        return res
