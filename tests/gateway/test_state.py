"""Merging partial samples into the latest state shown by the local API."""

from __future__ import annotations

from trackingbms.gateway.state import merge_latest


def test_merge_keeps_fields_a_partial_sample_lacks_and_takes_the_newest() -> None:
    full = {
        "battery_id": "pack-1",
        "seq": 1,
        "ts": "2026-11-24T10:00:00.000Z",
        "voltage_v": 52.0,
        "cells_mv": [3300, 3301],
        "faults": ["cell_voltage_high_l1"],
        "errors": {"0x96": "timeout"},
    }
    partial = {"battery_id": "pack-1", "seq": 2, "ts": "2026-11-24T10:00:01.000Z", "voltage_v": 52.1}
    merged = merge_latest(merge_latest(None, full), partial)
    assert merged["seq"] == 2 and merged["ts"] == partial["ts"] and merged["voltage_v"] == 52.1
    assert merged["cells_mv"] == [3300, 3301] and merged["faults"] == ["cell_voltage_high_l1"]
    assert "errors" not in merged  # errors describe one sample, not the merged state
    cleared = merge_latest(merged, {**partial, "seq": 3, "faults": []})
    assert cleared["faults"] == []  # an explicit empty list clears the faults


def test_a_long_bms_error_does_not_get_the_heartbeat_refused() -> None:
    # seen in the demo: a sleeping pack's error ran past the server's limit, the server answered 422 to every
    # heartbeat and the gateway logged its uplink as unreachable; the server now shortens it
    from trackingbms.gateway.state import BatteryStatus
    from trackingbms.server.schemas import BatteryLink

    st = BatteryStatus(battery_id="pack-1", port="tcp://127.0.0.1:1", poll_interval_s=1.0, cadences_s={})
    st.last_error = "no reply to 0x95 " * 60
    entry = BatteryLink.model_validate(st.heartbeat_entry())
    assert entry.last_error is not None and entry.last_error.startswith("no reply to 0x95")
    st.last_error = "timeout"
    assert BatteryLink.model_validate(st.heartbeat_entry()).last_error == "timeout"
