"""Simulator benchmark: ``python bench/sim.py --json`` prints JSON.

physics: wall time to simulate a 24 h solar day (16S, default 5 s steps) and the resulting speed-up;
responder: sans-I/O replies per second; tcp: request → complete reply over a real socket at 9600 baud
against its floor (request wire time + latency + reply wire time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from _check import Target, add_check_argument, check_targets
from trackingbms.daly.a5 import encode_frame
from trackingbms.sim import ManualClock, PackConfig, Quirks, SimulatedPack, serve_tcp


def bench_physics() -> dict[str, float]:
    pack = SimulatedPack(PackConfig(cells=16, scenario="solar-day"), Quirks(), clock=ManualClock())
    start = time.perf_counter()
    pack.advance(86400)
    wall = time.perf_counter() - start
    return {"solar_day_24h_wall_s": round(wall, 3), "speedup_x": round(86400 / wall)}


def bench_responder(n: int = 2000) -> dict[str, float]:
    pack = SimulatedPack(PackConfig(cells=16), Quirks(), clock=ManualClock())
    out: dict[str, float] = {}
    for name, req in (("0x90", encode_frame(0x40, 0x90)), ("0x95_16_frames", encode_frame(0x80, 0x95))):
        start = time.perf_counter()
        for _ in range(n):
            pack.respond(req)
        out[f"{name}_replies_per_s"] = round(n / (time.perf_counter() - start))
    return out


async def bench_tcp(n: int = 20) -> dict[str, float]:
    quirks = Quirks(latency_s=0.06, baud=9600)
    pack = SimulatedPack(PackConfig(cells=16), quirks)
    server = await serve_tcp(pack)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    frame_s = quirks.frame_wire_s()
    out: dict[str, float] = {}
    try:
        for name, address, data_id, frames in (("0x90", 0x40, 0x90, 1), ("0x95_host80", 0x80, 0x95, 16)):
            floor = frame_s + quirks.latency_s + frames * frame_s
            times = []
            for _ in range(n):
                start = time.perf_counter()
                writer.write(encode_frame(address, data_id))
                await reader.readexactly(13 * frames)
                times.append(time.perf_counter() - start)
            med = statistics.median(times)
            out[f"{name}_median_ms"] = round(med * 1000, 2)
            out[f"{name}_floor_ms"] = round(floor * 1000, 2)
            out[f"{name}_ratio"] = round(med / floor, 3)
    finally:
        writer.close()
        await server.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    add_check_argument(ap)
    args = ap.parse_args()
    result = {"physics": bench_physics(), "responder": bench_responder(), "tcp": asyncio.run(bench_tcp())}
    print(json.dumps(result, indent=1))
    # the simulator paces replies at the wire rate: a reply much later than its floor would skew every bench
    check_targets(
        [Target(f"tcp {k}", v, "<=", 1.2) for k, v in result["tcp"].items() if k.endswith("_ratio")],
        check=not args.no_check,
    )


if __name__ == "__main__":
    main()
