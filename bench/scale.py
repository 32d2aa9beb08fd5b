"""Scale-out benchmark: simulated gateways publish over MQTT into a 3-node NATS JetStream cluster (its MQTT
listener, stream R3), 1, 2 and 4 ``trackingbms ingest-worker`` processes store into PostgreSQL, while
faults are injected (worker SIGKILLs, NATS node SIGKILLs). Then every stored (battery, seq) is checked
against what the gateways generated.

    python bench/scale.py --json                        # phases of 1, 2, 4 workers
    python bench/scale.py --json --rate 3000 --phase-s 40
    python bench/scale.py --json --soak                 # soak: gateway crashes, worker restarts, an outage

The simulated gateways are in this process and use the gateway's own MQTT transport
(:mod:`trackingbms.gateway.uplinks.mqtt`): a sample is deleted from a gateway's pending set only on the
server's application acknowledgement, exactly like the real gateway's durable queue; a "gateway crash"
throws its connection and in-flight batches away (what is pending survives, as on disk). Prints one JSON
object per phase: ``workers``, ``offered_per_s``, ``stored_per_s`` (acknowledged samples per second of the
phase), ``e2e_p50_ms`` / ``e2e_p99_ms`` (sample generated → acknowledgement received, i.e. committed in
PostgreSQL), ``faults``; and a final object with ``lost`` and ``duplicated`` (both must be 0) and
``faults_total``. Everything shares this machine's cores: on 2 cores throughput does not grow with workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the NATS cluster

PG_ADMIN_URL = os.environ.get("TRACKINGBMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def sample(bid: str, seq: int, ts_ms: int, rng: random.Random) -> bytes:
    now = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return orjson.dumps(
        {
            "battery_id": bid,
            "seq": seq,
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "source": "sim",
            "voltage_v": round(52 + rng.random(), 2),
            "current_a": round(rng.uniform(-20, 20), 1),
            "soc_pct": round(rng.uniform(20, 90), 1),
            "cells_mv": [3300 + rng.randrange(40) for _ in range(16)],
            "temps_c": [25.0, 26.0],
        }
    )


class SimGateway:
    """Pending samples (the durable queue), sent in batches over the real MQTT transport."""

    def __init__(self, key: str, token: str, mqtt_url: str, batteries: list[str]):
        from trackingbms.gateway.config import UplinkConfig

        self.key = key
        self.token = token
        self.cfg = UplinkConfig(
            name="mqtt", url=mqtt_url, username=key, timeout_s=15.0, batch_max_samples=200, max_in_flight=2
        )
        self.batteries = batteries
        self.seq = dict.fromkeys(batteries, 0)
        self.last_ts_ms = dict.fromkeys(batteries, 0)  # a battery's samples need distinct ts
        self.pending: dict[tuple[str, int], tuple[float, bytes]] = {}
        self.inflight: set[tuple[str, int]] = set()
        self.generated: dict[str, list[int]] = {b: [] for b in batteries}
        self.latencies_s: list[float] = []
        self.acked = 0
        self.rejected = 0
        self.backoff_s = 0.0
        self.rng = random.Random(key)
        self.transport: Any = None
        self.new_transport()

    def new_transport(self) -> None:
        from trackingbms.gateway.uplinks.mqtt import MqttTransport

        self.transport = MqttTransport(self.cfg, self.token)

    async def crash(self) -> None:
        """A SIGKILL as far as the broker and server see it: the connection and in-flight batches vanish,
        the pending samples stay (they are on disk in a real gateway)."""
        old = self.transport
        self.new_transport()
        self.inflight.clear()
        await old.aclose()

    def generate(self, n: int) -> None:
        for _ in range(n):
            bid = self.batteries[self.rng.randrange(len(self.batteries))]
            self.seq[bid] += 1
            seq = self.seq[bid]
            ts_ms = max(int(time.time() * 1000), self.last_ts_ms[bid] + 1)
            self.last_ts_ms[bid] = ts_ms
            self.pending[(bid, seq)] = (time.monotonic(), sample(bid, seq, ts_ms, self.rng))
            self.generated[bid].append(seq)

    async def send_once(self) -> None:
        from trackingbms.gateway.uplinks.base import Reply

        keys = [k for k in self.pending if k not in self.inflight][: self.cfg.batch_max_samples]
        if not keys:
            await asyncio.sleep(0.05)
            return
        self.inflight.update(keys)
        transport = self.transport
        try:
            body = b'{"samples":[' + b",".join(self.pending[k][1] for k in keys) + b"]}"
            outcome = await transport.send_batch(body, 0)
            if isinstance(outcome, Reply) and transport is self.transport:
                now = time.monotonic()
                rejected = {int(r["index"]) for r in outcome.body.get("rejected") or []}
                if rejected and not self.rejected:
                    print(f"{self.key}: rejected {outcome.body['rejected'][:1]}", file=sys.stderr)
                self.rejected += len(rejected)
                for i, k in enumerate(keys):
                    created, _ = self.pending.pop(k)
                    if i in rejected:
                        continue
                    self.latencies_s.append(now - created)
                    self.acked += 1
                self.backoff_s = 0.0
            else:  # like the gateway's policy: jittered exponential backoff, not a retry storm
                self.backoff_s = min(30.0, max(1.0, self.backoff_s * 2))
                await asyncio.sleep(self.backoff_s * self.rng.uniform(0.5, 1.0))
        finally:
            self.inflight.difference_update(keys)

    async def run_sender(self, stop: asyncio.Event) -> None:
        async def lane() -> None:
            while not stop.is_set():
                await self.send_once()

        await asyncio.gather(*(lane() for _ in range(self.cfg.max_in_flight)))


async def create_db() -> str:
    import asyncpg

    name = "tbms_scale_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_db(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def provision(db_url: str, gateways: int, batteries: int) -> list[tuple[str, str, list[str]]]:
    from trackingbms.server import brokers
    from trackingbms.server import provisioning as p

    out = []
    async with p.open_store(db_url) as store:  # one engine for every call (each URL call would migrate)
        await p.create_tenant(store, "bench")
        await p.create_site(store, "bench", "site")
        tid = 1
        for g in range(gateways):
            name = f"gw{g}"
            token = (await p.provision_device(store, "bench", name))["token"]
            bids = [f"g{g}-b{b}" for b in range(batteries)]
            for bid in bids:
                await p.create_battery(store, "bench", "site", bid, device=name)
            out.append((brokers.device_key(tid, name), token, bids))
    return out


async def stored(db_url: str) -> tuple[dict[str, list[int]], int]:
    import asyncpg

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT b.battery_id, g.data FROM sample_segments g JOIN streams st ON st.id = g.stream_id "
            "JOIN batteries b ON b.id = st.battery_id"
        )
    finally:
        await conn.close()
    from trackingbms.server.store import segments

    out: dict[str, list[int]] = {}
    n = 0
    for r in rows:  # the hot segments' seq arrays (store/segments.py)
        seqs = segments.keys(r["data"])[0].tolist()
        out.setdefault(r["battery_id"], []).extend(seqs)
        n += len(seqs)
    return out, n


class Workers:
    def __init__(self, db_url: str, nats_urls: str, logdir: Path):
        self.db_url = db_url
        self.nats_urls = nats_urls
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_one(self) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"worker{len(self.procs)}.log").open("ab")
        proc = subprocess.Popen(
            [
                *CLI,
                "ingest-worker",
                "--nats",
                self.nats_urls,
                "--database-url",
                self.db_url,
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=log,
        )
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill_one(self) -> None:
        live = self.alive()
        if live:
            victim = random.choice(live)
            victim.kill()
            victim.wait(10)

    def stop_all(self) -> None:
        for p in self.alive():
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from scale.harness import NatsCluster

    workdir = Path(tempfile.mkdtemp(prefix="tbms-scale-"))
    db_name = await create_db()
    db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    cluster = NatsCluster(workdir / "nats")
    await asyncio.to_thread(cluster.start)
    results: list[dict[str, Any]] = []
    workers = Workers(db_url, cluster.nats_urls, workdir)
    try:
        from trackingbms.server.db import make_engine, migrate

        engine = make_engine(db_url)
        await migrate(engine)
        await engine.dispose()
        gws = [
            SimGateway(key, token, cluster.mqtt_url, bids)
            for key, token, bids in await provision(db_url, args.gateways, args.batteries)
        ]
        workers.start_one()

        def stream_ready() -> bool:
            try:
                return cluster.stream_info() is not None
            except Exception:
                return False

        for _ in range(120):  # the first worker creates the stream
            if await asyncio.to_thread(stream_ready):
                break
            await asyncio.sleep(0.5)
        stop = asyncio.Event()
        senders = [asyncio.create_task(g.run_sender(stop)) for g in gws]
        faults_total = 0
        rng = random.Random(1)
        phases = [1] if args.soak else args.workers
        for n_workers in phases:
            while len(workers.alive()) < n_workers:
                workers.start_one()
            while len(workers.alive()) > n_workers:
                workers.kill_one()
            for g in gws:
                g.latencies_s.clear()
            acked0 = sum(g.acked for g in gws)
            faults = 0
            t0 = time.monotonic()
            next_fault = t0 + args.fault_every_s
            per_tick = args.rate / len(gws) / 10
            carry = 0.0
            gw_crashes = 0
            outage_done = not args.soak
            while time.monotonic() - t0 < args.phase_s:
                carry += per_tick
                n = int(carry)
                carry -= n
                for g in gws:
                    g.generate(n)
                await asyncio.sleep(0.1)
                now = time.monotonic()
                if args.soak and gw_crashes < args.soak_gateway_kills and rng.random() < 0.5:
                    await rng.choice(gws).crash()
                    gw_crashes += 1
                    faults += 1
                if now >= next_fault:
                    next_fault = now + args.fault_every_s
                    kind = faults % 3
                    if kind in (0, 1):  # a worker SIGKILLed (the restart is a "server restart")
                        workers.kill_one()
                        workers.start_one()
                    else:  # a NATS node SIGKILLed, back a few seconds later
                        node = rng.randrange(cluster.size)
                        cluster.kill(node)
                        await asyncio.sleep(2)
                        await asyncio.to_thread(cluster.start, node)
                    faults += 1
                if not outage_done and now - t0 > args.phase_s / 2:
                    # the outage: every worker down, gateways keep generating (clock compressed)
                    for p in workers.alive():
                        p.kill()
                    await asyncio.sleep(args.outage_s)
                    while len(workers.alive()) < n_workers:
                        workers.start_one()
                    outage_done = True
                    faults += 1
            elapsed = time.monotonic() - t0
            acked = sum(g.acked for g in gws) - acked0
            lat = [x for g in gws for x in g.latencies_s]
            backlog = sum(len(g.pending) for g in gws)
            faults_total += faults
            results.append(
                {
                    "phase": "soak" if args.soak else f"{n_workers} workers",
                    "workers": n_workers,
                    "offered_per_s": args.rate,
                    "stored_per_s": round(acked / elapsed),
                    "e2e_p50_ms": round(pct(lat, 0.5) * 1000, 1),
                    "e2e_p99_ms": round(pct(lat, 0.99) * 1000, 1),
                    "backlog_at_end": backlog,
                    "faults": faults,
                    **({"gateway_crashes": gw_crashes} if args.soak else {}),
                }
            )
        # drain: no new samples; everything pending must be acknowledged
        for _ in range(int(args.drain_s * 2)):
            if not any(g.pending for g in gws):
                break
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
        for g in gws:
            await g.transport.aclose()
        got, rows = await stored(db_url)
        generated = {b: set(s) for g in gws for b, s in g.generated.items()}
        lost = sum(len(seqs - set(got.get(b, []))) for b, seqs in generated.items())
        duplicated = rows - sum(len(set(v)) for v in got.values())
        results.append(
            {
                "phase": "total",
                "generated": sum(len(s) for s in generated.values()),
                "stored_rows": rows,
                "lost": lost,
                "duplicated": duplicated,
                "unacknowledged_after_drain": sum(len(g.pending) for g in gws),
                "rejected": sum(g.rejected for g in gws),
                "faults_total": faults_total,
                "load_note": "shared 2-core machine, generator + 3 NATS nodes + workers + PostgreSQL",
            }
        )
        return results
    finally:
        workers.stop_all()
        cluster.stop()
        await drop_db(db_name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--rate", type=float, default=1000.0, help="samples/s offered by all gateways together")
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--batteries", type=int, default=5, help="per gateway")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--phase-s", type=float, default=30.0)
    ap.add_argument("--fault-every-s", type=float, default=7.0)
    ap.add_argument("--drain-s", type=float, default=120.0)
    ap.add_argument("--soak", action="store_true", help="gateway crashes, worker restarts, an outage")
    ap.add_argument("--soak-gateway-kills", type=int, default=100)
    ap.add_argument(
        "--outage-s",
        type=float,
        default=30.0,
        help="soak: all workers down this long "
        "(stands for 30 minutes: the gateways' pending sets grow the same way, faster)",
    )
    args = ap.parse_args()
    if args.soak and args.phase_s == 30.0:
        args.phase_s = 120.0
        args.fault_every_s = 12.0  # 10 worker/server restarts (and NATS node kills) over the soak
    import signal

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt  # run()'s finally stops the workers and NATS nodes, drops the database

    signal.signal(signal.SIGTERM, on_term)
    results = asyncio.run(run(args))
    for r in results:
        print(json.dumps(r) if args.json else r)


if __name__ == "__main__":
    main()
