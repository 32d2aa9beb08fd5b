"""Alarm evaluation cost: what the server's alarm service spends per ingested sample (the analytics
estimator + the sample rules), in CPU time on one core, against the rules alone as the baseline.

    python bench/alarms.py --json

Prints {"feed_samples_per_s", "rules_only_samples_per_s", "samples"}. The ingest benchmark's server does
this work too (off the request path, same process): compare `TRACKINGBMS_ALARMS_ENABLED=false python
bench/ingest.py --json` with `python bench/ingest.py --json` for the effect on ingest.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from trackingbms.analytics.alarms import BUILTIN_RULES, AlarmEvaluator
from trackingbms.analytics.estimator import BatteryEstimator
from trackingbms.model import format_ts
from trackingbms.server.alarms import AlarmService, _Battery, _split


class _NoEstimator:
    t_last = None

    def update(self, sample: dict[str, Any]) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=50_000)
    args = ap.parse_args()
    t0 = datetime.now(UTC)
    samples = [
        {
            "battery_id": "p",
            "seq": i,
            "ts": format_ts(t0 + timedelta(seconds=i)),
            "voltage_v": 53.2,
            "current_a": -4.5 + (i % 7),
            "soc_pct": 80.0,
            "remaining_ah": 80.0,
            "cells_mv": [3320 + (i + k) % 5 for k in range(16)],
            "temps_c": [24.0, 25.0],
            "faults": [],
        }
        for i in range(args.samples)
    ]
    sample_rules, presence_rules = _split(list(BUILTIN_RULES))
    service = AlarmService.__new__(AlarmService)  # _feed needs no store
    out: dict[str, Any] = {"samples": args.samples}
    for name, est in (
        ("feed_samples_per_s", BatteryEstimator(battery_id="p")),
        ("rules_only_samples_per_s", _NoEstimator()),
    ):
        b = _Battery(
            1, 1, 1, "p", "p", est, AlarmEvaluator(sample_rules), AlarmEvaluator(presence_rules), set()
        )
        t = time.process_time()
        service._feed(b, samples)
        out[name] = round(args.samples / (time.process_time() - t))
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
