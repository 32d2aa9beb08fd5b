"""Export benchmark: ``python bench/export.py --json`` prints JSON.

Parquet (typed columns, zstd) against the CSV export as the baseline, measured in the same run on the same
stored rows (16S samples with 2 temperatures, packed as the store keeps them): samples per second to build
the file, and bytes per sample.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta

from trackingbms.model import format_ts
from trackingbms.server import parquet
from trackingbms.server.store import packing
from trackingbms.server.store.export import csv_header, csv_row


def rows(n: int) -> list[tuple[int, int, bytes]]:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        d = {
            "battery_id": "bench-1",
            "seq": i,
            "ts": format_ts(t0 + timedelta(seconds=i)),
            "source": "sim",
            "voltage_v": 53.2 + (i % 50) / 100,
            "current_a": -12.5 + (i % 30) / 10,
            "soc_pct": 80.0 - (i % 400) / 10,
            "remaining_ah": 80.0,
            "cycles": 12,
            "state": "discharging",
            "charge_mos": True,
            "discharge_mos": True,
            "cells_mv": [3300 + (i + c) % 25 for c in range(16)],
            "temps_c": [24.0, 25.5],
            "faults": [],
        }
        _, seq, ts_ms, data, _ = packing.validate_and_pack(d, int(time.time() * 1000))
        out.append((ts_ms, seq, data))
    return out


def bench(n: int) -> dict[str, float]:
    stored = rows(n)
    start = time.perf_counter()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_header(16, 2))
    for ts_ms, seq, data in stored:
        w.writerow(csv_row(ts_ms, seq, data, 16, 2))
    csv_bytes = len(buf.getvalue().encode())
    csv_s = time.perf_counter() - start

    start = time.perf_counter()
    pq_bytes = len(parquet.to_bytes(parquet.table("bench-1", stored, packing.unpack)))
    pq_s = time.perf_counter() - start
    return {
        "samples": n,
        "csv_samples_per_s": round(n / csv_s),
        "csv_bytes_per_sample": round(csv_bytes / n, 1),
        "parquet_samples_per_s": round(n / pq_s),
        "parquet_bytes_per_sample": round(pq_bytes / n, 1),
        "parquet_vs_csv_speed": round(csv_s / pq_s, 2),
        "parquet_vs_csv_size": round(pq_bytes / csv_bytes, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()
    result = bench(args.samples)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
