"""Bluetooth payload format (docs/ble.md): bytes and notifications per 16S reading, and the codec's speed.

    python bench/ble.py --json            # measure and check (exit 1 when a target is missed)
    python bench/ble.py --json --no-check # only measure

Baseline in the same run: the same reading as the JSON the LAN API sends (orjson, the fastest JSON there is),
its size and its encode + decode time. Targets: a 16S reading with 4 sensors fits one notification at an ATT
MTU of 77 (≤ 73 bytes of message), and the pure-Python codec outpaces the radio: LE 1M carries ~100 kB/s of
application data at best, ~1,300 readings of 73 bytes a second, so ≥ 2,000 encode + decode a second on one
core here (a gateway polls a few readings a second; a history download is the radio's pace).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _check import Target, add_check_argument, check_targets
from trackingbms.gateway.ble import codec
from trackingbms.model import Sample


def reading_16s() -> dict[str, object]:
    return Sample(
        battery_id="pack-1",
        seq=1_764_000_000_000,
        ts="2026-11-30T15:00:00.123Z",
        source="a5-uart",
        voltage_v=53.2,
        current_a=-12.3,
        soc_pct=76.5,
        remaining_ah=76.512,
        cycles=42,
        state="discharging",
        charge_mos=True,
        discharge_mos=True,
        charger_connected=False,
        load_connected=True,
        cells_mv=[3325 + i for i in range(16)],
        temps_c=[21.0, 22.0, 23.0, 24.0],
        balancing=[],
        faults=[],
        fault_code=0,
    ).to_wire()


def rate(fn: object, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("-n", type=int, default=50_000, help="readings per timing")
    add_check_argument(parser)
    args = parser.parse_args()

    wire = reading_16s()
    message = codec.encode_reading(0, wire)
    as_json = orjson.dumps(wire)

    def ours() -> None:
        codec.decode_reading(codec.encode_reading(0, wire))

    def baseline() -> None:
        orjson.loads(orjson.dumps(wire))

    ours_rate = max(rate(ours, args.n) for _ in range(3))
    json_rate = max(rate(baseline, args.n) for _ in range(3))
    result = {
        "reading_16s_bytes": len(message),
        "json_bytes": len(as_json),
        "size_ratio": round(len(message) / len(as_json), 3),
        "notifications_per_reading": {
            str(mtu): len(codec.fragment(message, mtu)) for mtu in (23, 77, 185, 247)
        },
        "smallest_mtu_for_one_notification": len(message) + codec.ATT_OVERHEAD + codec.FRAGMENT_HEADER,
        "encode_decode_per_s": round(ours_rate),
        "orjson_encode_decode_per_s": round(json_rate),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    check_targets(
        [
            Target("16S reading bytes", len(message), "<=", 73),
            Target("encode+decode readings/s", ours_rate, ">=", 2_000),
        ],
        check=not args.no_check,
    )


if __name__ == "__main__":
    main()
