"""Real brokers and processes for the scale-out tests: our own Mosquitto (with passwords and ACLs) and a
3-node NATS JetStream cluster with its MQTT listener, on free local ports; ingest workers and API servers
as ``trackingbms`` child processes on a throw-away PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.harness import CLI, env_with, free_port, wait_for  # tests/ is on sys.path (pytest rootdir)

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A private ``mosquitto`` with password + ACL files (as ``trackingbms admin`` writes them),
    persistence on (sessions and queued QoS 1 messages survive a restart)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.passwd = workdir / "passwd"
        self.acl = workdir / "acl"
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {self.passwd}\n"
            f"acl_file {self.acl}\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
            "user root\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for f in (self.passwd, self.acl):
            if not f.exists():
                f.write_text("")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_for("mosquitto to listen", lambda: port_open(self.port), 20)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # mosquitto has no reload acknowledgement

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class NatsCluster:
    """Three ``nats-server`` processes: one cluster, JetStream on each, MQTT listener on each."""

    def __init__(self, workdir: Path, size: int = 3, users_file: Path | None = None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.client_ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.mqtt_ports = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size
        #: nats-py connect() keywords when the cluster has users (a worker user's)
        self.admin_credentials: dict[str, str] = {}
        for i in range(size):
            routes = ", ".join(
                f'"nats-route://127.0.0.1:{p}"' for j, p in enumerate(self.cluster_ports) if j != i
            )
            conf = (
                f'server_name: "n{i}"\n'
                f'listen: "127.0.0.1:{self.client_ports[i]}"\n'
                "max_payload: 8MB\n"
                f'jetstream {{ store_dir: "{workdir / f"js{i}"}" }}\n'
                f'mqtt {{ listen: "127.0.0.1:{self.mqtt_ports[i]}", stream_replicas: {min(3, size)} }}\n'
            )
            if size > 1:
                conf += (
                    f'cluster {{ name: "tbms", listen: "127.0.0.1:{self.cluster_ports[i]}",\n'
                    f"  routes: [{routes}] }}\n"
                )
            if users_file is not None:  # written by `trackingbms admin mqtt-device --nats-users`
                conf += f'include "{os.path.relpath(users_file, workdir)}"\n'  # relative to this file
            (workdir / f"n{i}.conf").write_text(conf)

    def start(self, i: int | None = None) -> None:
        for n in [i] if i is not None else range(self.size):
            with (self.workdir / f"n{n}.log").open("ab") as log:
                self.procs[n] = subprocess.Popen(
                    [NATS_SERVER, "-c", str(self.workdir / f"n{n}.conf")], stdout=log, stderr=log
                )
        for n in [i] if i is not None else range(self.size):
            wait_for(f"nats node {n}", lambda n=n: port_open(self.mqtt_ports[n]), 60)
        wait_for("JetStream (a meta leader elected)", self.jetstream_ready, 60, every_s=0.5)

    def jetstream_ready(self) -> bool:
        async def go() -> bool:
            import nats

            servers = self.nats_urls.split(",")
            nc = await nats.connect(
                servers=servers, connect_timeout=2, allow_reconnect=False, **self.admin_credentials
            )
            try:
                await nc.jetstream(timeout=2).account_info()
                return True
            finally:
                await nc.close()

        return asyncio.run(go())

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for i in range(self.size):
            proc = self.procs[i]
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill(i)

    @property
    def nats_urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    @property
    def mqtt_url(self) -> str:
        return "mqtt://" + ",".join(f"127.0.0.1:{p}" for p in self.mqtt_ports)

    def stream_info(self) -> Any:
        async def go() -> Any:
            import nats

            nc = await nats.connect(
                servers=self.nats_urls.split(","), connect_timeout=2, **self.admin_credentials
            )
            try:
                return await nc.jetstream().stream_info("TBMS_SAMPLES")
            finally:
                await nc.close()

        return asyncio.run(go())


class Proc:
    """A ``trackingbms`` child process with its log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*CLI, *self.args], stdout=log, stderr=log, env=self.env)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    """A tenant on PostgreSQL, provisioned, with helpers to start workers and API servers on it."""

    EMAIL, PASSWORD = "ops@acme.test", "s3cret-pass"

    def __init__(self, workdir: Path, db_url: str, battery_ids: list[str], device: str = "gw-1"):
        from trackingbms.server import provisioning as p

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.device = device
        self.procs: list[Proc] = []

        async def provision() -> None:
            await p.create_tenant(db_url, "acme")
            await p.create_user(db_url, "acme", self.EMAIL, self.PASSWORD, "admin")
            await p.create_site(db_url, "acme", "depot")
            await p.provision_device(db_url, "acme", device)
            for bid in battery_ids:
                await p.create_battery(db_url, "acme", "depot", bid, device=device)

        asyncio.run(provision())

    def admin(self, *args: str) -> str:
        out = subprocess.run(
            [*CLI, "admin", *args, "--database-url", self.db_url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def admin_plain(self, *args: str) -> str:
        """An admin command that takes no database (broker files only)."""
        out = subprocess.run([*CLI, "admin", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def worker(self, *args: str, **env: str) -> Proc:
        n = len(self.procs)
        proc = Proc(
            ["ingest-worker", *args, "--database-url", self.db_url],
            self.workdir / f"proc{n}-worker.log",
            env_with(**env),
        )
        self.procs.append(proc)
        return proc.start()

    def api(self, **env: str) -> tuple[Proc, str]:
        n = len(self.procs)
        port = free_port()
        proc = Proc(
            ["server", "--port", str(port), "--database-url", self.db_url, "--log-level", "warning"],
            self.workdir / f"proc{n}-api.log",
            env_with(**env),
        )
        self.procs.append(proc)
        proc.start()
        url = f"http://127.0.0.1:{port}"
        wait_for("the API to answer", lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200)
        return proc, url

    def seqs(self, api_url: str, battery_id: str) -> list[int]:
        r = httpx.post(api_url + "/api/v1/auth/login", json={"email": self.EMAIL, "password": self.PASSWORD})
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.get(
            f"{api_url}/api/v1/batteries/{battery_id}/export.csv",
            params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
            headers=headers,
            timeout=60,
        )
        r.raise_for_status()
        return [int(row["seq"]) for row in csv.DictReader(io.StringIO(r.text))]

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()


class RegionNats:
    """One region's NATS: a single node, its own JetStream domain (named after the region), joined to the
    other regions by a leaf-node connection (``hub`` listens for leaves, the others connect to it)."""

    def __init__(self, workdir: Path, region: str, *, leaf_port: int, hub: bool):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.port = free_port()
        leaf = (
            f'leafnodes {{ listen: "127.0.0.1:{leaf_port}" }}\n'
            if hub
            else f'leafnodes {{ remotes: [{{ url: "nats-leaf://127.0.0.1:{leaf_port}" }}], reconnect: 1 }}\n'
        )
        (workdir / "nats.conf").write_text(
            f'server_name: "{region}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{workdir / "js"}", domain: "{region}" }}\n' + leaf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "nats.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.workdir / "nats.conf")], stdout=log, stderr=log
            )
        wait_for(f"nats of region {self.region}", lambda: port_open(self.port), 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class Region:
    """A region on one machine: its NATS, its own SQLite database, one API process naming the region."""

    def __init__(self, workdir: Path, name: str, peers: list[str], nats: RegionNats):
        self.workdir = workdir
        self.name = name
        self.peers = peers
        self.nats = nats
        self.data_dir = workdir / "data"
        self.db_url = f"sqlite+aiosqlite:///{self.data_dir / 'trackingbms.db'}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None

    def admin(self, *args: str) -> str:
        out = subprocess.run(
            [*CLI, "admin", *args, "--database-url", self.db_url], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def start(self) -> None:
        env = env_with(
            TRACKINGBMS_REGION=self.name,
            TRACKINGBMS_PUBLIC_URL=self.url,
            TRACKINGBMS_NATS_URL=self.nats.url,
            TRACKINGBMS_REGION_PEERS=",".join(self.peers),
            TRACKINGBMS_DIRECTORY_SYNC_S="1",
        )
        self.proc = Proc(
            ["server", "--port", str(self.port), "--database-url", self.db_url, "--log-level", "info"],
            self.workdir / "api.log",
            env,
        ).start()
        wait_for(
            f"the API of region {self.name}",
            lambda: httpx.get(self.url + "/healthz", timeout=2).status_code == 200,
        )

    def samples_in_db(self) -> int:
        import sqlite3

        with sqlite3.connect(self.data_dir / "trackingbms.db") as conn:
            # hot segments (one row per stream and batch) and compacted blocks
            return conn.execute(
                "SELECT (SELECT coalesce(sum(n), 0) FROM sample_segments)"
                " + (SELECT coalesce(sum(n), 0) FROM sample_blocks)"
            ).fetchone()[0]

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
        self.nats.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.nats.kill()
