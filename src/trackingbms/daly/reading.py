"""Decoded A5 records → :class:`trackingbms.model.Reading` (Sample field names)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trackingbms.daly.records import (
    Balancing,
    CellVoltages,
    Faults,
    MosStatus,
    PackStatus,
    Record,
    StatusInfo,
    Temperatures,
)
from trackingbms.model import Source

if TYPE_CHECKING:
    from trackingbms.model import Reading


def reading_fields(records: Iterable[Record]) -> dict[str, Any]:
    """The Sample fields the records carry. Incomplete multi-frame replies contribute nothing:
    a partial reading stays partial, never padded."""
    out: dict[str, Any] = {}
    for r in records:
        if isinstance(r, PackStatus):
            out.update(voltage_v=r.voltage_v, current_a=r.current_a, soc_pct=r.soc_pct)
        elif isinstance(r, MosStatus):
            out.update(charge_mos=r.charge_mos, discharge_mos=r.discharge_mos, remaining_ah=r.remaining_ah)
            if r.state is not None:
                out["state"] = r.state
        elif isinstance(r, StatusInfo):
            out.update(
                cycles=r.cycles, charger_connected=r.charger_connected, load_connected=r.load_connected
            )
        elif isinstance(r, CellVoltages):
            if r.complete and None not in r.cells_mv:
                out["cells_mv"] = [int(v) for v in r.cells_mv if v is not None]
        elif isinstance(r, Temperatures):
            if r.complete and None not in r.temps_c:
                out["temps_c"] = [float(v) for v in r.temps_c if v is not None]
        elif isinstance(r, Balancing):
            out["balancing"] = list(r.balancing)
        elif isinstance(r, Faults):
            out.update(faults=list(r.faults), fault_code=r.fault_code)
    return out


def to_reading(
    records: Iterable[Record], *, source: Source | None = "a5-uart", errors: dict[str, str] | None = None
) -> Reading:
    """One Reading from decoded records; ``errors`` names the commands that failed and why."""
    # imported here, not at the top: pydantic is paid for when the first reading is built, not when a
    # BMS client is imported (``trackingbms read`` start-up, issue 14)
    from trackingbms.model import Reading

    return Reading(source=source, errors=errors or None, **reading_fields(records))
