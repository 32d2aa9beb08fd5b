"""Reading a hot segment back: CPU µs per sample of turning a segment's packed rows into wire dicts, with
``packing.unpack`` row by row against ``packing.unpack_many`` (column-wise), on the same rows, run
interleaved so both see the same machine load. The alarm service reads every newly stored segment back.

    python bench/unpack.py --json

Prints one JSON object per case: ``ingest-16s`` is a 500-sample segment of bench/ingest.py's samples (one
battery: its ``make_batches`` with one battery per gateway; several fields hold still there, as they do on
a pack at rest), ``noisy-16s`` 500 16S samples with every field changing from sample to sample (the
figure for a busy pack), ``mixed`` 500 samples of a dozen layouts in random order (partial samples, 8 to
24 cells in both cell modes, balancing, faults, an error now and then), ``scattered`` the same with
source and via drawn per sample (nearly every row its own length and header: the worst case, left to
unpack). ``unpack_us_per_sample`` is ``[unpack(d) for d in datas]``, ``unpack_many_us_per_sample`` is
``unpack_many(datas)``, ``segment_us_per_sample`` is ``segments.samples(payload)`` (seq and ts lists
too, from the payload itself); each the best of ``--repeats`` runs (``time.process_time``, garbage
collection on, as in a server). Results are checked equal first.
Target: ``unpack_many`` ≤ 1 µs per 16S sample (``ingest-16s``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from _check import Target, add_check_argument, check_targets
from ingest import make_batches
from trackingbms.model import SOURCES, STATES, VIAS, format_ts


def noisy_16s(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """16S samples whose every field moves (random walks at the Daly wire's resolution)."""
    out = []
    for i in range(n):
        out.append(
            {
                "source": "a5-uart",
                "via": "wifi",
                "voltage_v": round(rng.uniform(48, 56), 1),
                "current_a": round(rng.uniform(-30, 30), 1),
                "soc_pct": round(rng.uniform(0, 100), 1),
                "remaining_ah": round(rng.uniform(0, 100), 3),
                "cycles": 40 + i // 100,
                "state": rng.choice(STATES),
                "charge_mos": rng.random() < 0.5,
                "discharge_mos": rng.random() < 0.5,
                "charger_connected": rng.random() < 0.5,
                "load_connected": rng.random() < 0.5,
                "cells_mv": [3300 + rng.randrange(-20, 20) for _ in range(16)],
                "temps_c": [round(rng.uniform(15, 40)) for _ in range(4)],
                "balancing": [],
                "faults": [],
                "fault_code": rng.randrange(3),
            }
        )
    return out


def mixed(n: int, rng: random.Random, scattered: bool = False) -> list[dict[str, Any]]:
    """One battery's samples of a dozen layouts, shuffled: full and partial samples of 8, 16 and 24 cells
    in both cell modes, balancing on now and then, a fault every 50 samples, an error every 100.
    ``scattered``: source and via drawn per sample too, so that nearly every row is alone with its
    length and header (no battery sends that: the worst case, where rows go through unpack)."""
    kinds: list[dict[str, Any]] = []
    for cells in (8, 16, 24):
        for spread in (40, 2000):  # close cells pack as first + deltas, spread ones as u16 each
            kinds.append({"cells": cells, "spread": spread, "partial": False})
            kinds.append({"cells": cells, "spread": spread, "partial": True})
    out = []
    for i in range(n):
        k = rng.choice(kinds)
        d: dict[str, Any] = {
            "source": rng.choice(SOURCES) if scattered else SOURCES[0],
            "via": rng.choice(VIAS) if scattered else VIAS[0],
            "voltage_v": round(rng.uniform(20, 90), 2),
            "current_a": round(rng.uniform(-30, 30), 2),
            "cells_mv": [3000 + rng.randrange(k["spread"]) for _ in range(k["cells"])],
            "temps_c": [round(rng.uniform(-10, 50), 1) for _ in range(4 if scattered else 2)],
        }
        if not k["partial"]:
            d |= {"soc_pct": round(rng.uniform(0, 100), 2), "state": rng.choice(STATES), "charge_mos": True}
            d["balancing"] = [3, 7] if i % 10 == 0 else []
            d["faults"] = ["cell_overvoltage"] if i % 50 == 0 else []
            d["fault_code"] = 4 if i % 50 == 0 else 0
        if i % 100 == 7:
            d["errors"] = {"temps": "sensor 3 open"}
        out.append(d)
    return out


def with_keys(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples as one battery's, one second apart, ending a minute ago."""
    t0_s = time.time() - 60 - len(samples)
    return [
        {"battery_id": "b-1", "seq": i, "ts": format_ts(datetime.fromtimestamp(t0_s + i, UTC)), **s}
        for i, s in enumerate(samples)
    ]


def best_us(fn: Callable[[], Any], loops: int, samples: int) -> float:
    t0 = time.process_time()
    for _ in range(loops):
        fn()
    return 1e6 * (time.process_time() - t0) / loops / samples


def measure(case: str, batch: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    from trackingbms.server.store import packing, segments

    ok, rejected = packing.validate_batch(batch)
    if rejected:
        raise SystemExit(f"{case}: samples rejected: {rejected[:3]}")
    segs = segments.build(
        np.array([p.seq for p in ok]), np.array([p.ts_ms for p in ok]), [p.data for p in ok]
    )
    if len(segs) != 1:
        raise SystemExit(f"{case}: {len(segs)} segments, want 1")
    payload = segs[0].data
    datas = segments.datas(payload)
    want = [packing.unpack(d) for d in datas]
    if orjson.dumps(packing.unpack_many(datas)) != orjson.dumps(want) or orjson.dumps(
        segments.samples(payload)[2]
    ) != orjson.dumps(want):
        raise SystemExit(f"{case}: unpack_many and unpack disagree")
    n = len(datas)
    one: list[float] = []
    many: list[float] = []
    seg: list[float] = []
    for _ in range(args.repeats):  # interleaved: a burst of load on the machine hits all three
        one.append(best_us(lambda: [packing.unpack(d) for d in datas], args.loops, n))
        many.append(best_us(lambda: packing.unpack_many(datas), args.loops, n))
        seg.append(best_us(lambda: segments.samples(payload), args.loops, n))
    return {
        "case": case,
        "samples": n,
        "length_header_groups": len({(len(d), d[:3]) for d in datas}),
        "unpack_us_per_sample": round(min(one), 3),
        "unpack_many_us_per_sample": round(min(many), 3),
        "segment_us_per_sample": round(min(seg), 3),
        "speedup": round(min(one) / min(many), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--loops", type=int, default=20, help="segments per timed run")
    add_check_argument(ap)
    args = ap.parse_args()
    rng = random.Random(1)
    ingest = orjson.loads(make_batches(1, 1, 500, 500)[0][1])["samples"]
    results = []
    for case, batch in (
        ("ingest-16s", ingest),
        ("noisy-16s", with_keys(noisy_16s(500, rng))),
        ("mixed", with_keys(mixed(500, rng))),
        ("scattered", with_keys(mixed(500, rng, scattered=True))),
    ):
        out = measure(case, batch, args)
        results.append(out)
        print(
            json.dumps(out)
            if args.json
            else f"{case:>10}: unpack {out['unpack_us_per_sample']} µs/sample, unpack_many "
            f"{out['unpack_many_us_per_sample']} (×{out['speedup']}), segments.samples "
            f"{out['segment_us_per_sample']}"
        )
        sys.stdout.flush()
    check_targets(
        [Target("ingest-16s unpack_many µs/sample", results[0]["unpack_many_us_per_sample"], "<=", 1.0)],
        check=not args.no_check,
    )


if __name__ == "__main__":
    main()
