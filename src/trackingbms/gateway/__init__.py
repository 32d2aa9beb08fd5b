"""The gateway (the "transmitter"): polls BMSs, keeps a durable queue, sends it up, serves a local API.

Public API::

    from trackingbms.gateway import GatewayConfig, run_gateway
    config = GatewayConfig.from_toml("gateway.toml")   # or GatewayConfig.from_dict({...})
    await run_gateway(config, stop=stop_event)

The configuration schema is :data:`trackingbms.gateway.config.EXAMPLE_CONFIG` (also printed by
``trackingbms gateway --example-config``): ``device_token``, ``state_dir``, ``disk_budget_mb``,
``local_history_h``, ``heartbeat_interval_s``, ``parked_retry_s``, ``[[uplinks]]`` in priority order
(``name`` wifi / cellular / lan, ``url``, batching), ``[failover]``, ``[retry]``, ``[local_api]`` and one
``[[bms]]`` per pack (``battery_id``, ``port``, ``family``, ``address``, ``board``, ``invert_current``,
``poll_interval_s``, ``[bms.cadences_s]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackingbms.gateway.config import EXAMPLE_CONFIG, ConfigError, GatewayConfig

if TYPE_CHECKING:
    import asyncio

__all__ = ["EXAMPLE_CONFIG", "ConfigError", "GatewayConfig", "run_gateway"]


async def run_gateway(config: GatewayConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (see :mod:`trackingbms.gateway.app`)."""
    from trackingbms.gateway.app import run_gateway as _run

    await _run(config, stop=stop)
