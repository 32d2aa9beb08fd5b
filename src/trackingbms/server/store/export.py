"""Export: a battery's raw samples in time order, page by page, and the CSV layout built from them."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson

from trackingbms.model import MEASUREMENT_FIELDS, SAMPLE_FIELDS
from trackingbms.server.store import cold, packing
from trackingbms.server.store.base import TenantScope

#: model fields the CSV writes in columns of their own (lists expanded or joined, errors as JSON) or not
#: at all (battery_id is the file's name); everything else is a scalar column, in the model's order
_CSV_SPECIAL = ("battery_id", "seq", "ts", "cells_mv", "temps_c", "balancing", "faults", "errors")
_SCALARS = ("source", "via", *(f for f in MEASUREMENT_FIELDS if f not in _CSV_SPECIAL))
# a new list-valued model field needs a decision here (expand? join?): fail at import rather than drop it
if set(_SCALARS) | set(_CSV_SPECIAL) != set(SAMPLE_FIELDS):
    raise ImportError("store.export: the CSV columns do not cover trackingbms.model.SAMPLE_FIELDS")


def csv_header(n_cells: int, n_temps: int) -> list[str]:
    # the published column order (docs/api.md): ts, seq, the scalars, faults, cells, temps, balancing, errors
    return [
        "ts",
        "seq",
        *_SCALARS,
        "faults",
        *(f"cell_{i}_mv" for i in range(1, n_cells + 1)),
        *(f"temp_{i}_c" for i in range(1, n_temps + 1)),
        "balancing",
        "errors",
    ]


#: a text cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """Text as a spreadsheet will show it, never evaluate it: a leading ``'`` before a formula start.
    Only for text: numbers (negative ones included) are written as numbers and never pass here."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_val(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return spreadsheet_text(v)
    return v


def csv_row(ts_ms: int, seq: int, data: bytes, n_cells: int, n_temps: int) -> list[Any]:
    """One stored sample as a CSV row under :func:`csv_header` (absent values empty)."""
    m = packing.unpack(data)
    cells = m.get("cells_mv") or []
    temps = m.get("temps_c") or []
    return [
        packing.ms_to_ts(ts_ms),
        seq,
        *(_csv_val(m.get(k)) for k in _SCALARS),
        spreadsheet_text(";".join(m["faults"])) if "faults" in m else "",
        *(cells[i] if i < len(cells) else "" for i in range(n_cells)),
        *(temps[i] if i < len(temps) else "" for i in range(n_temps)),
        ";".join(map(str, m["balancing"])) if "balancing" in m else "",
        # why a partial sample is partial: {"0x95": "reason"} as JSON text
        spreadsheet_text(orjson.dumps(m["errors"]).decode()) if m.get("errors") else "",
    ]


class ExportScope(TenantScope):
    async def export_info(self, battery_id: str) -> tuple[int, int]:
        """(cell columns, temp columns) for an export; raises NotFound before streaming starts."""
        async with self.engine.connect() as conn:
            b, _ = await self._battery_streams(conn, battery_id)
        return b.cell_count, b.temp_count

    async def export_rows(
        self, battery_id: str, from_ms: int, to_ms: int, page: int = 5000
    ) -> AsyncIterator[list[tuple[int, int, bytes]]]:
        """Pages of (ts_ms, seq, data) in time order, each page its own short query (no long-held cursor);
        hot rows and compressed blocks together (:func:`trackingbms.server.store.cold.iter_raw`)."""
        async with self.engine.connect() as conn:
            _, sids = await self._battery_streams(conn, battery_id)
        async for rows in cold.iter_raw(self.engine, sids, from_ms, to_ms, page):
            yield [(r.ts_ms, r.seq, r.data) for r in rows]

    async def export_csv(
        self, battery_id: str, from_ms: int, to_ms: int, n_cells: int, n_temps: int
    ) -> AsyncIterator[str]:
        """The CSV text (header first), a chunk per page; column counts from :meth:`export_info`."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(csv_header(n_cells, n_temps))
        async for page in self.export_rows(battery_id, from_ms, to_ms):
            for ts_ms, seq, data in page:
                w.writerow(csv_row(ts_ms, seq, data, n_cells, n_temps))
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        if buf.tell():
            yield buf.getvalue()
