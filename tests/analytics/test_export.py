"""The CSV export format: one definition, read back field by field, partial samples stay partial."""

from __future__ import annotations

import csv
import io

from trackingbms.export import header, read_rows, row


def test_round_trip_keeps_partial_samples_partial() -> None:
    full = {
        "ts": "2026-06-21T00:00:00.000Z", "seq": 1, "source": "sim", "voltage_v": 53.1, "current_a": -12.5,
        "soc_pct": 61.2, "cycles": 3, "state": "discharging", "charge_mos": True, "discharge_mos": False,
        "cells_mv": [3300, 3301, 3299], "temps_c": [21.0, 22.0], "balancing": [2], "faults": ["soc_low_l1"],
        "fault_code": 0,
    }  # fmt: skip
    partial = {"ts": "2026-06-21T00:00:01.000Z", "seq": 2, "voltage_v": 53.0, "errors": {"0x95": "timeout"}}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header(3, 2))
    w.writerow(row(full, 3, 2))
    w.writerow(row(partial, 3, 2))
    back = list(read_rows(csv.reader(io.StringIO(buf.getvalue()))))
    assert back[0] == full
    assert back[1] == partial  # nothing filled in with zeros
