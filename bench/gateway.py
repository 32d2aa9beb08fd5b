"""Gateway benchmarks: resource use while polling, and draining a day's backlog to a real server.

    python bench/gateway.py --json                # both parts
    python bench/gateway.py --json --part idle    # RSS / CPU only

Part "idle": a ``trackingbms gateway`` process polls 4 simulated packs at 1 s and sends to a real
``trackingbms server``; after a warm-up, CPU time and RSS of the gateway process are read from /proc.
Targets: RSS < 50 MB (issue 14; the first design's target was 80 MB), CPU < 5 % of one core.

Part "drain": the gateway's queue is pre-filled with 24 h × 3 packs × 1 s = 259,200 samples (full
readings: 16 cells, 4 temperatures), then the gateway starts with the same 3 packs polling live at 1 s.
Measured: drain rate (samples/s until the queue is empty; target ≥ 15,000/s) and, from the server's live
WebSocket, how late live samples arrive at the server meanwhile (target < 2 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "gateway"))
from harness import (
    GatewayProcess,
    LoopThread,
    Packs,
    ServerProcess,
    gateway_config,
    wait_for,
)

from _check import Target, add_check_argument, check_targets

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_mem_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def bms(packs: Packs, poll_interval_s: float) -> list[dict[str, Any]]:
    return [
        {"battery_id": bid, "port": packs.url(bid), "source": "sim", "poll_interval_s": poll_interval_s}
        for bid in packs.packs
    ]


def bench_idle(work: Path, loop: LoopThread, warmup_s: float, measure_s: float) -> dict[str, Any]:
    ids = [f"pack-{i}" for i in range(1, 5)]
    packs = Packs(loop, ids, cells=16, sensors=4)
    srv = ServerProcess(work / "idle-server", ids)
    gw = GatewayProcess(
        gateway_config(
            srv.device_token,
            work / "idle-gw",
            [{"name": "wifi", "url": srv.url}],
            bms(packs, 1.0),
            heartbeat_interval_s=30.0,
            log_level="warning",
        ),
        work,
    )
    try:
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        wait_for("the gateway", gw.state, timeout_s=30)
        time.sleep(warmup_s)
        cpu0, t0 = proc_cpu_s(pid), time.monotonic()
        n0 = sum(len(srv.seqs(b)) for b in ids)
        time.sleep(measure_s)
        cpu1, t1 = proc_cpu_s(pid), time.monotonic()
        n1 = sum(len(srv.seqs(b)) for b in ids)
        mem = proc_mem_mb(pid)
        return {
            "packs": len(ids),
            "poll_interval_s": 1.0,
            "measured_s": round(t1 - t0, 1),
            "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "rss_mb": mem.get("VmRSS"),
            "rss_peak_mb": mem.get("VmHWM"),
            "samples_delivered": n1 - n0,
            "targets": {"rss_mb": 50, "cpu_pct": 5},
        }
    finally:
        gw.stop()
        srv.stop()
        packs.close()


def prefill(state_dir: Path, ids: list[str], per_pack: int) -> tuple[float, dict[str, int]]:
    from trackingbms.gateway.queue import DurableQueue
    from trackingbms.model import Reading

    t0 = time.monotonic()
    q = DurableQueue(state_dir, disk_budget_mb=2000)
    start = datetime.now(UTC) - timedelta(seconds=per_pack + 5)
    for k, bid in enumerate(ids):
        chunk = 10_000
        for i0 in range(0, per_pack, chunk):
            q.put_many(
                bid,
                [
                    Reading(
                        ts=start + timedelta(seconds=i),
                        source="sim",
                        voltage_v=52.0 + (i % 100) / 100,
                        current_a=-5.0 + k,
                        soc_pct=50 + (i % 50) / 10,
                        remaining_ah=50.0,
                        cycles=12,
                        state="discharging",
                        charge_mos=True,
                        discharge_mos=True,
                        charger_connected=False,
                        load_connected=True,
                        cells_mv=[3300 + (i + c) % 7 for c in range(16)],
                        temps_c=[25.0, 25.5, 26.0, 24.5],
                        balancing=[],
                        faults=[],
                        fault_code=0,
                    )
                    for i in range(i0, min(per_pack, i0 + chunk))
                ],
            )
    first_live = {bid: q.next_seq(bid) or 0 for bid in ids}
    q.close()
    return time.monotonic() - t0, first_live


def bench_drain(work: Path, loop: LoopThread, per_pack: int) -> dict[str, Any]:
    ids = ["pack-1", "pack-2", "pack-3"]
    state_dir = work / "drain-gw"
    prefill_s, first_live = prefill(state_dir, ids, per_pack)
    total = per_pack * len(ids)
    packs = Packs(loop, ids, cells=16, sensors=4)
    srv = ServerProcess(work / "drain-server", ids)
    # live samples as the server sees them: its live WebSocket pushes each battery's newest sample per batch
    lateness: list[float] = []
    stop_ws = threading.Event()

    def watch() -> None:
        from websockets.sync.client import connect

        token = srv.user_headers()["Authorization"].split()[1]
        with connect(srv.url.replace("http", "ws") + f"/api/v1/live?token={token}") as ws:
            while not stop_ws.is_set():
                try:
                    msg = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                if msg.get("type") != "sample":
                    continue
                sample = msg["sample"]
                if sample["seq"] < first_live[msg["battery_id"]]:
                    continue  # the newest backlog sample of a batch without a live one
                late_s = (datetime.now(UTC) - datetime.fromisoformat(sample["ts"])).total_seconds()
                lateness.append(late_s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    gw = GatewayProcess(
        gateway_config(
            srv.device_token,
            state_dir,
            [
                {
                    "name": "wifi",
                    "url": srv.url,
                    "batch_max_samples": 5000,
                    "batch_max_age_s": 0.5,
                    "max_in_flight": 2,
                }
            ],
            bms(packs, 1.0),
            heartbeat_interval_s=30.0,
            log_level="warning",
            disk_budget_mb=2000,
        ),
        work,
    )
    try:
        t_start = time.monotonic()
        gw.start()
        wait_for("the gateway", gw.state, timeout_s=30, every_s=0.05)
        t_up = time.monotonic()
        assert gw.proc is not None and srv.proc is not None
        cpu_gw0, cpu_srv0 = proc_cpu_s(gw.proc.pid), proc_cpu_s(srv.proc.pid)
        depth = gw.state()["gateway"]["queue_depth"]
        while depth > 0:
            time.sleep(0.25)
            depth = gw.state()["gateway"]["queue_depth"]
        t_done = time.monotonic()
        cpu_gw, cpu_srv = proc_cpu_s(gw.proc.pid) - cpu_gw0, proc_cpu_s(srv.proc.pid) - cpu_srv0
        time.sleep(3)  # live samples after the drain too
        stop_ws.set()
        watcher.join(5)
        at_server = sum(len(set(srv.seqs(b))) for b in ids)
        drain_s = t_done - t_up
        return {
            "backlog_samples": total,
            "prefill_s": round(prefill_s, 1),
            "gateway_start_s": round(t_up - t_start, 2),
            "drain_s": round(drain_s, 2),
            "drain_samples_per_s": round(total / drain_s),
            "samples_at_server": at_server,
            "cpu_s_gateway": round(cpu_gw, 1),
            "cpu_s_server": round(cpu_srv, 1),
            "live_samples_seen": len(lateness),
            "live_late_s_median": round(statistics.median(lateness), 3) if lateness else None,
            "live_late_s_max": round(max(lateness), 3) if lateness else None,
            "targets": {"drain_samples_per_s": 15000, "live_late_s_max": 2.0},
        }
    finally:
        stop_ws.set()
        gw.stop()
        srv.stop()
        packs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--part", choices=["idle", "drain", "all"], default="all")
    ap.add_argument("--warmup-s", type=float, default=10)
    ap.add_argument("--measure-s", type=float, default=60)
    ap.add_argument("--per-pack", type=int, default=86_400, help="backlog samples per pack (24 h at 1 s)")
    add_check_argument(ap)
    args = ap.parse_args()
    loop = LoopThread()
    results: dict[str, Any] = {"bench": "gateway", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="tbms-bench-") as tmp:
        work = Path(tmp)
        if args.part in ("idle", "all"):
            results["idle"] = bench_idle(work, loop, args.warmup_s, args.measure_s)
        if args.part in ("drain", "all"):
            results["drain"] = bench_drain(work, loop, args.per_pack)
    loop.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for part, figures in results.items():
            print(part, figures)
    targets = []
    if "idle" in results:
        targets += [
            Target("idle: RSS MB", results["idle"]["rss_mb"], "<", 50),
            Target("idle: % of one core", results["idle"]["cpu_pct_of_one_core"], "<", 5),
        ]
    if "drain" in results:
        targets += [
            Target("drain: samples/s", results["drain"]["drain_samples_per_s"], ">=", 15000),
            Target("drain: live samples late, max s", results["drain"]["live_late_s_max"], "<", 2.0),
        ]
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
