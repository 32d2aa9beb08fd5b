"""Benchmark: full snapshot of a simulated 16-cell, 4-sensor pack at 9600 baud, per family (a5, d2, p81),
and over CAN at 250 kbit/s (a5-can).

The simulator paces every reply byte at the baud rate (10 bits a byte) and answers after its
turnaround latency. The floor for one snapshot is the sum, over its commands, of the request's wire
time, the reply frames' wire time and one turnaround: no client can be faster on a real line. For D2 and
0x81 a snapshot is one register block (D2: 80 registers, 165 reply bytes; 0x81: 93 registers, 191 bytes).
``ratio`` = median snapshot time / floor. Then the same under 1 % corrupted reply frames (bad
checksums), with the share of snapshots that came back complete; and under 1 % of frames cut short
inside bursts plus 1 % junk bytes before replies.

a5-can: the same A5 commands as CAN frames (0.52 ms each at 250 kbit/s) through python-can, on its
``virtual`` bus in-process or through the simulated slcan adapter on a pty (``--transport slcan``); the
floor is the request frame + the reply frames + one turnaround per command. A corrupt frame never reaches
the host on CAN (the controller drops it on its CRC), so "1 % corrupted" means 1 % of frames lost.

    python bench/poll.py --json [--family a5|d2|p81|a5-can] [--runs 20] [--corrupt-runs 100]
                         [--transport pty|tcp (a5-can: virtual|slcan)] [--no-check]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from _check import Target, add_check_argument, check_targets
from trackingbms.bms import BmsError, DalyBMS, open_bms
from trackingbms.daly import d2, p81
from trackingbms.daly.a5 import frame_time_s
from trackingbms.daly.modbus import wire_time_s
from trackingbms.daly.poll import COMMANDS, SNAPSHOT_ORDER, frames_sent
from trackingbms.links import open_link
from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_pty, serve_tcp

CELLS, SENSORS, BAUD, ADDRESS = 16, 4, 9600, 0x40


def _count(data_id: int) -> int | None:
    return CELLS if data_id == 0x95 else SENSORS if data_id == 0x96 else None


#: registers of a full snapshot's one block, per Modbus-shaped family
BLOCK_REGISTERS = {"d2": d2.STATUS_REGISTERS_LONG, "p81": p81.STATUS_REGISTERS}


def floor_s(latency_s: float, family: str = "a5") -> float:
    """Request + reply wire time + one turnaround, summed over the snapshot's commands."""
    if family == "a5-can":
        from trackingbms.daly import can as dcan

        frames = sum(
            1 + (frames_sent(c.data_id, address=ADDRESS, count=_count(c.data_id)) or 1)
            for c in (COMMANDS[n] for n in SNAPSHOT_ORDER)
        )
        return dcan.frame_time_s(dcan.BITRATE, frames) + len(SNAPSHOT_ORDER) * latency_s
    if family in BLOCK_REGISTERS:
        return wire_time_s(BAUD, 8) + wire_time_s(BAUD, 5 + 2 * BLOCK_REGISTERS[family]) + latency_s
    total = 0.0
    for name in SNAPSHOT_ORDER:
        did = COMMANDS[name].data_id
        count = CELLS if did == 0x95 else SENSORS if did == 0x96 else None
        n = frames_sent(did, address=ADDRESS, count=count) or 1
        total += frame_time_s(BAUD, 1 + n) + latency_s
    return total


async def run(runs: int, quirks: Quirks, transport: str, family: str = "a5") -> dict[str, Any]:
    quirks.protocol = "a5" if family == "a5-can" else family
    pack = SimulatedPack(PackConfig(cells=CELLS, sensors=SENSORS, seed=1), quirks)
    endpoint: Any
    if family == "a5-can":
        from trackingbms.sim.can import serve_can, serve_slcan_pty

        channel = f"bench-{uuid.uuid4().hex[:10]}"
        endpoint = await (serve_slcan_pty(pack) if transport == "slcan" else serve_can(pack, channel))
        link = await open_link(endpoint.url)
    else:
        endpoint = await (
            serve_pty(pack) if transport == "pty" else serve_tcp(pack, host="127.0.0.1", port=0)
        )
        link = await open_link(endpoint.path if transport == "pty" else endpoint.url, baud=BAUD)
    options: dict[str, Any] = {"baud": BAUD, "retries": 3, "turnaround_s": quirks.latency_s + 0.1}
    if family == "a5":
        options["address"] = ADDRESS
    bms = await open_bms("bench", family, link=link, **options)
    times: list[float] = []
    complete = 0
    try:
        if isinstance(bms, DalyBMS):
            await bms.status()  # learn the counts once, as a long-running poller does
        for _ in range(runs):
            t0 = time.perf_counter()
            try:
                reading = await bms.snapshot()
                complete += not reading.errors
            except BmsError:
                pass
            times.append(time.perf_counter() - t0)
    finally:
        await link.close()
        await endpoint.close()
    floor = floor_s(quirks.latency_s, family)
    median = statistics.median(times)
    return {
        "floor_s": round(floor, 4),
        "median_s": round(median, 4),
        "ratio": round(median / floor, 3),
        "p90_s": round(sorted(times)[int(0.9 * (len(times) - 1))], 4),
        "runs": runs,
        "complete_share": round(complete / runs, 3),
        "stats": bms.stats.as_dict(),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--corrupt-runs", type=int, default=100)
    ap.add_argument("--transport", choices=("pty", "tcp", "virtual", "slcan"), default=None)
    ap.add_argument("--family", choices=("a5", "d2", "p81", "a5-can"), default="a5")
    add_check_argument(ap)
    args = ap.parse_args()
    fam = args.family
    can_transports = ("virtual", "slcan")
    if args.transport is None:
        args.transport = "virtual" if fam == "a5-can" else "pty"
    if (fam == "a5-can") != (args.transport in can_transports):
        ap.error(f"--family {fam} runs over {'virtual|slcan' if fam == 'a5-can' else 'pty|tcp'}")
    tr = args.transport
    clean = await run(args.runs, Quirks(baud=BAUD, latency_s=0.06, stale_bytes=True), tr, fam)
    corrupt = await run(args.corrupt_runs, Quirks(baud=BAUD, latency_s=0.06, bad_checksum=0.01), tr, fam)
    # harsher extra: 1 % of frames cut short (A5: inside bursts, Q4) plus 1 % junk before replies
    lossy = await run(args.corrupt_runs, Quirks(baud=BAUD, latency_s=0.06, loss=0.01, garbage=0.01), tr, fam)
    pack_info: dict[str, Any] = {"cells": CELLS, "sensors": SENSORS, "baud": BAUD}
    if fam == "a5-can":
        pack_info.update(bitrate=250_000, host_address=f"0x{ADDRESS:02X}")
        del pack_info["baud"]
    elif fam == "a5":
        pack_info["host_address"] = f"0x{ADDRESS:02X}"
    else:
        pack_info["registers"] = BLOCK_REGISTERS[fam]
    result = {
        "family": fam,
        "pack": pack_info,
        "transport": args.transport,
        **{k: clean[k] for k in ("floor_s", "median_s", "ratio", "p90_s")},
        "clean": clean,
        "corrupt_1pct": corrupt,
        "truncated_1pct_garbage_1pct": lossy,
        "targets": {
            "clean_ratio_le_1_15": clean["ratio"] <= 1.15,
            "corrupt_complete_ge_0_95": corrupt["complete_share"] >= 0.95,
            "corrupt_ratio_le_1_5": corrupt["ratio"] <= 1.5,
        },
    }
    print(json.dumps(result, indent=None if args.json else 2))
    check_targets(
        [
            Target("clean ratio to the wire-time floor", clean["ratio"], "<=", 1.15),
            Target("1 % corrupt: complete share", corrupt["complete_share"], ">=", 0.95),
            Target("1 % corrupt: ratio to the floor", corrupt["ratio"], "<=", 1.5),
        ],
        check=not args.no_check,
    )


if __name__ == "__main__":
    asyncio.run(main())
