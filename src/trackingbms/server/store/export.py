"""Export: a battery's raw samples in time order, page by page, as CSV in the layout of
``trackingbms.model`` (``csv_header`` / ``csv_row``: one definition, shared with ``simulate --record`` and
``analyze``)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from trackingbms.model import csv_header
from trackingbms.model import csv_row as sample_csv_row
from trackingbms.server.store import cold, packing
from trackingbms.server.store.base import TenantScope


def csv_row(ts_ms: int, seq: int, data: bytes, n_cells: int, n_temps: int) -> list[Any]:
    """One stored sample as a CSV row under :func:`csv_header` (the layout is the model's, one definition)."""
    m = packing.unpack(data)
    m["ts"] = packing.ms_to_ts(ts_ms)
    m["seq"] = seq
    return sample_csv_row(m, n_cells, n_temps)


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
