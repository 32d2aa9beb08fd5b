"""Parquet exports: the CSV export's content with typed columns, for pandas, DuckDB, Spark, Polars.

One row per sample, oldest first. Timestamps are ``timestamp[ms, UTC]``; cells, temperatures, balancing and
faults are list columns (a CSV needs one column per cell; Parquet does not); ``errors`` (why a sample is
partial) is JSON text as in the CSV; absent values are nulls, never zeros. Enumerations (source, via, state)
are dictionary-encoded strings. The column order is the Sample's (``trackingbms.model.SAMPLE_FIELDS``).

``write_dataset`` lays out a hive-partitioned dataset, ``battery_id=<id>/day=<YYYY-MM-DD>/part-0.parquet``,
which ``pyarrow.dataset``, ``pandas.read_parquet(DIR)`` and DuckDB's
``read_parquet('DIR/**/*.parquet', hive_partitioning = true)`` read directly.

pyarrow is an optional dependency (``pip install 'trackingbms[parquet]'``): :func:`require` says so in
one line when it is missing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from trackingbms.model import SAMPLE_FIELDS

MEDIA_TYPE = "application/vnd.apache.parquet"
ROW_GROUP_ROWS = 64_000


class ParquetUnavailable(RuntimeError):
    pass


def require() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ParquetUnavailable("Parquet export needs pyarrow: pip install 'trackingbms[parquet]'") from None
    return pyarrow


def schema() -> Any:
    pa = require()
    enum = pa.dictionary(pa.int8(), pa.string())
    types: dict[str, Any] = {
        "battery_id": pa.string(),
        "seq": pa.int64(),
        "ts": pa.timestamp("ms", tz="UTC"),
        "source": enum,
        "via": enum,
        "voltage_v": pa.float64(),
        "current_a": pa.float64(),
        "soc_pct": pa.float64(),
        "remaining_ah": pa.float64(),
        "cycles": pa.int64(),
        "state": enum,
        "charge_mos": pa.bool_(),
        "discharge_mos": pa.bool_(),
        "charger_connected": pa.bool_(),
        "load_connected": pa.bool_(),
        "cells_mv": pa.list_(pa.int32()),
        "temps_c": pa.list_(pa.float64()),
        "balancing": pa.list_(pa.int32()),
        "faults": pa.list_(pa.string()),
        "fault_code": pa.int16(),
        "errors": pa.string(),
    }
    # a new model field needs a column type here: fail loudly rather than drop it from exports
    if set(types) != set(SAMPLE_FIELDS):
        raise RuntimeError(
            f"parquet: columns {sorted(set(types) ^ set(SAMPLE_FIELDS))} do not match the model"
        )
    return pa.schema([(name, types[name]) for name in SAMPLE_FIELDS])


#: (ts_ms, seq, packed data) as the store's export pages give them
Row = tuple[int, int, bytes]


def table(battery_id: str, rows: Iterable[Row], unpack: Callable[[bytes], dict[str, Any]]) -> Any:
    """A pyarrow Table of one battery's samples from the store's export rows."""
    pa = require()
    cols: dict[str, list[Any]] = {name: [] for name in SAMPLE_FIELDS}
    for ts_ms, seq, data in rows:
        m = unpack(data)
        cols["battery_id"].append(battery_id)
        cols["seq"].append(seq)
        cols["ts"].append(ts_ms)
        errors = m.get("errors")
        cols["errors"].append(orjson.dumps(errors).decode() if errors else None)
        for name in SAMPLE_FIELDS[3:-1]:  # source … fault_code
            cols[name].append(m.get(name))
    sch = schema()
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in sch], schema=sch)


def to_bytes(tbl: Any) -> bytes:
    pa = require()
    sink = io.BytesIO()
    pa.parquet.write_table(tbl, sink, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    return sink.getvalue()


def day_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def write_day(out_dir: Path, battery_id: str, day: str, tbl: Any) -> Path:
    """One battery-day as ``out_dir/battery_id=<id>/day=<day>/part-0.parquet`` (the partition columns live
    in the path, as hive partitioning expects); replaced whole, so a re-export of a day never duplicates."""
    pa = require()
    folder = out_dir / f"battery_id={battery_id}" / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "part-0.parquet"
    tmp = folder / ".part-0.parquet.partial"
    pa.parquet.write_table(tbl.drop_columns(["battery_id"]), tmp, compression="zstd")
    tmp.replace(path)
    return path


async def export_dataset(
    tenant_store: Any,
    out_dir: Path,
    from_ms: int,
    to_ms: int,
    unpack: Callable[[bytes], dict[str, Any]],
    battery_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Every battery of a tenant (or those named), ``[from_ms, to_ms)``, as the partitioned dataset.
    Returns counts: batteries, days (files) and samples written."""
    require()
    if battery_ids is None:
        battery_ids = [b["battery_id"] for b in await tenant_store.fleet()]
    files = samples = 0
    batteries = 0
    for bid in battery_ids:
        batteries += 1
        day: str | None = None
        rows: list[Row] = []
        async for page in tenant_store.export_rows(bid, from_ms, to_ms):
            for row in page:  # pages are in time order: a day's rows are contiguous
                d = day_of(row[0])
                if d != day and rows:
                    assert day is not None
                    write_day(out_dir, bid, day, table(bid, rows, unpack))
                    files, samples, rows = files + 1, samples + len(rows), []
                day = d
                rows.append(row)
        if rows:
            assert day is not None
            write_day(out_dir, bid, day, table(bid, rows, unpack))
            files, samples = files + 1, samples + len(rows)
    return {"batteries": batteries, "files": files, "samples": samples, "out": str(out_dir)}
