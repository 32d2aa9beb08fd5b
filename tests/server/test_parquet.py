"""Parquet exports read back with pyarrow and DuckDB: ``trackingbms admin export --format parquet`` (a dataset
partitioned by battery and day) and ``GET …/export.parquet``, both with the CSV export's content, typed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from trackingbms.server import provisioning as p
from trackingbms.server.settings import Settings

from .conftest import ServerThread, login, sample

pa = pytest.importorskip("pyarrow")
duckdb = pytest.importorskip("duckdb")
import pyarrow.dataset as ds  # noqa: E402

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]
DAY_S = 86_400


def _clear_of_midnight_s() -> float:
    """Seconds to age every sample by so that no block of them below straddles midnight UTC (the export
    is partitioned by day: near midnight "today's" ten minutes would land on two days)."""
    now = datetime.now(UTC)
    of_day_s = now.hour * 3600 + now.minute * 60 + now.second
    if of_day_s < 3600:
        return of_day_s + 7200  # yesterday 22:00
    if of_day_s > 23 * 3600:
        return of_day_s - 22 * 3600  # today 22:00
    return 0.0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


async def setup(url: str) -> str:
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        token = (await p.provision_device(store, "acme", "gw-1"))["token"]
        for bid in ("px-1", "px-2"):
            await p.create_battery(store, "acme", "depot", bid, device="gw-1")
        await p.create_user(store, "acme", "admin@acme.test", "admin-pass-1", "admin")
        await p.create_tenant(store, "other")
    return token


@pytest.fixture
def loaded(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'trackingbms.db'}"
    srv = ServerThread(Settings(data_dir=data, database_url=url, ingest_rate_per_s=0, ingest_burst=0)).start()
    token = asyncio.run(setup(url))
    age_s = _clear_of_midnight_s()
    batch = [sample("px-1", i, seconds_ago=age_s + 2 * DAY_S - i * 60) for i in range(1, 31)]  # two days ago
    batch += [sample("px-1", 100 + i, seconds_ago=age_s + 600 - i * 10) for i in range(20)]  # today
    # a partial sample: no cells, and why
    batch.append(
        {
            "battery_id": "px-1",
            "seq": 200,
            "ts": sample("px-1", 0, seconds_ago=age_s)["ts"],
            "voltage_v": 52.1,
            "errors": {"0x95": "timeout"},
        }
    )
    batch += [
        sample("px-2", i, seconds_ago=age_s + 300 - i, cells_mv=[3300, 3301, 3302, 3303]) for i in range(10)
    ]
    r = httpx.post(
        f"{srv.base_url}/api/v1/ingest", json={"samples": batch}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200 and r.json()["accepted"] == len(batch), r.text
    yield srv, data
    srv.stop()


def test_admin_export_writes_a_dataset_pyarrow_and_duckdb_read(loaded, tmp_path: Path) -> None:
    _, data = loaded
    out = tmp_path / "export"
    r = cli(
        "admin",
        "export",
        "--tenant",
        "acme",
        "--format",
        "parquet",
        "--out",
        str(out),
        "--data-dir",
        str(data),
    )
    assert r.returncode == 0, r.stderr
    assert "61 samples of 2 batteries" in r.stdout
    files = sorted(out.glob("battery_id=*/day=*/*.parquet"))
    assert len(files) == 3  # px-1 on two days, px-2 on one

    # pyarrow: hive partitions become columns; the columns are typed
    dataset = ds.dataset(out, format="parquet", partitioning="hive")
    t = dataset.to_table()
    assert t.num_rows == 61
    assert t.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert t.schema.field("cells_mv").type == pa.list_(pa.int32())
    assert t.schema.field("charge_mos").type == pa.bool_()
    partial = t.filter(ds.field("seq") == 200).to_pylist()[0]
    assert partial["cells_mv"] is None and partial["soc_pct"] is None  # absent stays null, not zero
    assert partial["errors"] == '{"0x95":"timeout"}'

    # DuckDB reads the directory as it is
    con = duckdb.connect()
    glob = str(out / "**" / "*.parquet")
    rows = con.execute(
        f"SELECT battery_id, count(*), min(len(cells_mv)), max(cells_mv[1]) FROM read_parquet('{glob}', "
        "hive_partitioning = true) GROUP BY battery_id ORDER BY battery_id"
    ).fetchall()
    assert rows == [("px-1", 51, 16, 3320), ("px-2", 10, 4, 3300)]
    described = con.execute(f"DESCRIBE SELECT ts, voltage_v FROM read_parquet('{glob}')").fetchall()
    kinds = {row[0]: row[1] for row in described}
    assert kinds["ts"].startswith("TIMESTAMP") and kinds["voltage_v"] == "DOUBLE"

    # exporting again replaces days, never duplicates them
    assert cli("admin", "export", "-t", "acme", "--out", str(out), "--data-dir", str(data)).returncode == 0
    assert ds.dataset(out, format="parquet", partitioning="hive").count_rows() == 61


def test_admin_export_errors_are_one_line(loaded, tmp_path: Path) -> None:
    _, data = loaded
    r = cli("admin", "export", "-t", "nobody", "--out", str(tmp_path / "o"), "--data-dir", str(data))
    assert r.returncode == 1 and "no tenant 'nobody'" in r.stderr and "Traceback" not in r.stderr
    r = cli(
        "admin",
        "export",
        "-t",
        "acme",
        "--out",
        str(tmp_path / "o"),
        "--format",
        "xlsx",
        "--data-dir",
        str(data),
    )
    assert r.returncode == 2 and "unknown --format" in r.stderr
    r = cli("admin", "export", "-t", "other", "--out", str(tmp_path / "o"), "--data-dir", str(data))
    assert r.returncode == 0 and "0 samples" in r.stdout  # a tenant sees only its own batteries


def test_admin_export_without_to_includes_samples_stamped_ahead(loaded, tmp_path: Path) -> None:
    """Ingest accepts a sample up to 5 min ahead of the server's clock (a gateway clock running fast): an
    export of "everything" must hold it, not stop at now."""
    srv, data = loaded
    token = asyncio.run(_device_token(data))
    ahead = sample("px-2", 900, seconds_ago=-60, cells_mv=[3300, 3301, 3302, 3303])
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{srv.base_url}/api/v1/ingest", json={"samples": [ahead]}, headers=auth)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    out = tmp_path / "ahead"
    r = cli("admin", "export", "-t", "acme", "--out", str(out), "--data-dir", str(data))
    assert r.returncode == 0 and "62 samples" in r.stdout, r.stdout + r.stderr
    seqs = ds.dataset(out, format="parquet", partitioning="hive").to_table(columns=["seq"]).column("seq")
    assert 900 in seqs.to_pylist()


async def _device_token(data: Path) -> str:
    async with p.open_store(f"sqlite+aiosqlite:///{data / 'trackingbms.db'}") as store:
        return (await p.new_device_token(store, "acme", "gw-1"))["token"]


def test_export_parquet_has_the_csv_content_typed(loaded, tmp_path: Path) -> None:
    import csv
    import io

    import pyarrow.parquet as pq

    srv, _ = loaded
    user = asyncio.run(login(srv.base_url, "admin@acme.test", "admin-pass-1"))
    auth = {"Authorization": f"Bearer {user}"}
    span = {"from": "2000-01-01T00:00:00Z"}
    base = f"{srv.base_url}/api/v1/batteries/px-1"
    r = httpx.get(f"{base}/export.parquet", headers=auth, params=span)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    t = pq.read_table(io.BytesIO(r.content))
    rows = list(csv.DictReader(io.StringIO(httpx.get(f"{base}/export.csv", headers=auth, params=span).text)))
    assert t.num_rows == len(rows) == 51
    assert t.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    got = t.to_pylist()
    for row, rec in zip(rows, got, strict=True):
        assert int(row["seq"]) == rec["seq"]
        assert row["ts"] == rec["ts"].strftime("%Y-%m-%dT%H:%M:%S.") + f"{rec['ts'].microsecond // 1000:03d}Z"
        assert (float(row["voltage_v"]) if row["voltage_v"] else None) == rec["voltage_v"]
        cells = [int(row[f"cell_{i}_mv"]) for i in range(1, 17) if row[f"cell_{i}_mv"]]
        assert cells == (rec["cells_mv"] or [])
        assert row["charge_mos"] == ("" if rec["charge_mos"] is None else str(rec["charge_mos"]).lower())
        assert (row["errors"] or None) == rec["errors"]
    # DuckDB reads the downloaded file as it is
    path = tmp_path / "px-1.parquet"
    path.write_bytes(r.content)
    assert duckdb.connect().execute(f"SELECT count(*), max(seq) FROM '{path}'").fetchone() == (51, 200)

    assert httpx.get(f"{srv.base_url}/api/v1/batteries/nope/export.parquet", headers=auth).status_code == 404
    assert httpx.get(f"{base}/export.parquet").status_code == 401
