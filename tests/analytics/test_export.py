"""The CSV export format: one definition, read back field by field, partial samples stay partial."""

from __future__ import annotations

import csv
import io

from trackingbms.model import csv_header as header
from trackingbms.model import csv_row as row
from trackingbms.model import read_csv_rows as read_rows


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


def test_text_is_neutralised_like_the_server_export_and_read_back() -> None:
    from trackingbms.model import spreadsheet_text as server_text

    sample = {
        "ts": "2026-06-21T00:00:00.000Z",
        "seq": 1,
        "state": "idle",
        "faults": ["-x", "y"],
        "current_a": -3.5,
    }
    r = row(sample, 0, 0)
    assert r[r.index("idle")] == server_text("idle")
    assert "'-x;y" in r and -3.5 in r  # text neutralised, numbers left alone, as the server does
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header(0, 0), r])
    assert next(read_rows(csv.reader(io.StringIO(buf.getvalue())))) == sample
