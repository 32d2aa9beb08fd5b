"""The repository layer, one module per concern behind two doors:

- :class:`Store` (server-wide): tokens and logins (``auth``), storing ingested batches (``ingest``, fed by
  :mod:`trackingbms.server.ingest`), heartbeats (``heartbeat``), retention and sizes (``retention``),
  alarm state and transitions (``alarms``), the alarm feed's segment reads and lease (``alarm_feed``);
- :class:`TenantStore` (``store.tenant(id)``): everything one tenant may see or change — provisioning,
  the fleet read model, history, export, alarms, rules, health, the phone relay's device lookup. It puts
  the tenant into every query itself, so scoping is not remembered route by route; ids from another
  tenant behave as if they did not exist.

``packing`` is the binary row format of a sample, ``series`` the one n / min / max / sum accumulator,
``blocks`` the compressed format of older samples and ``cold`` their compaction, reads and duplicate rules
(every raw-sample read goes through ``cold.read_raw`` / ``cold.iter_raw``).
"""

from __future__ import annotations

from trackingbms.server.store.alarm_feed import AlarmFeedStore, FeedSegment, Lease
from trackingbms.server.store.alarms import AlarmsScope, AlarmStore
from trackingbms.server.store.api_tokens import ApiTokenScope, ApiTokenStore
from trackingbms.server.store.auth import AuthStore
from trackingbms.server.store.base import ROLES, Conflict, DeviceRef, NotFound, UserRef, now_ms
from trackingbms.server.store.cold import ColdStore, CompactResult
from trackingbms.server.store.export import ExportScope
from trackingbms.server.store.fleet import FleetScope
from trackingbms.server.store.heartbeat import HeartbeatStore
from trackingbms.server.store.history import RAW_HISTORY_MAX_ROWS, HistoryScope
from trackingbms.server.store.ingest import IngestResult, IngestStore, PackedSample
from trackingbms.server.store.provisioning import ProvisioningScope
from trackingbms.server.store.relay import RelayScope
from trackingbms.server.store.retention import RetentionStore

__all__ = [
    "RAW_HISTORY_MAX_ROWS",
    "ROLES",
    "ColdStore",
    "CompactResult",
    "Conflict",
    "DeviceRef",
    "FeedSegment",
    "IngestResult",
    "Lease",
    "NotFound",
    "PackedSample",
    "Store",
    "TenantStore",
    "UserRef",
    "now_ms",
]


class TenantStore(
    ProvisioningScope, FleetScope, HistoryScope, ExportScope, ApiTokenScope, AlarmsScope, RelayScope
):
    """Everything one tenant may see or change (see the module docstring)."""


class Store(
    AuthStore,
    IngestStore,
    HeartbeatStore,
    RetentionStore,
    ColdStore,
    ApiTokenStore,
    AlarmStore,
    AlarmFeedStore,
):
    """The server-wide store; :meth:`tenant` opens one tenant's scope."""

    def tenant(self, tenant_id: int) -> TenantStore:
        return TenantStore(self, tenant_id)
