"""Per-battery connectivity as users see it (design.md "Connectivity"): pure, times in epoch ms."""

from __future__ import annotations

from typing import get_args

from trackingbms.model import Connectivity

CONNECTIVITY_STATES: tuple[str, ...] = get_args(Connectivity)


def connectivity(
    now_ms: int,
    *,
    poll_interval_s: float,
    last_received_ms: int | None,
    received_ts_ms: int | None,
    heartbeat_ms: int | None,
    link_state: str | None,
    offline_timeout_s: float = 300.0,
    grace_s: float = 15.0,
) -> Connectivity:
    """``last_received_ms``: when samples last arrived; ``received_ts_ms``: the newest ``ts`` in that
    arrival; ``heartbeat_ms`` / ``link_state``: the gateway's last heartbeat and its word on this BMS link.

    Only samples make a battery ``online`` (a keep-alive never does). Fresh arrivals whose readings are
    old mean the gateway is draining its queue: ``backfilling``. A live gateway without fresh samples
    says why: ``asleep`` if it says so, otherwise ``link-down``. Nothing for the offline timeout: ``offline``.
    """
    window_ms = (3 * poll_interval_s + grace_s) * 1000
    offline_ms = offline_timeout_s * 1000
    if last_received_ms is not None and now_ms - last_received_ms <= window_ms:
        if received_ts_ms is not None and now_ms - received_ts_ms > window_ms:
            return "backfilling"
        return "online"
    gateway_alive = heartbeat_ms is not None and now_ms - heartbeat_ms <= offline_ms
    if gateway_alive:
        return "asleep" if link_state == "asleep" else "link-down"
    if last_received_ms is not None and now_ms - last_received_ms <= offline_ms:
        # samples stopped recently without a heartbeat to explain it
        return "link-down"
    return "offline"
