"""Guarded writes: switch a MOSFET or set the SOC, then read the BMS back and say what did not take.

One path for every writer (``trackingbms set``, Home Assistant's switches on the gateway): a Daly BMS
acknowledges a MOSFET write even when a protection holds the MOSFET off, so a write is only reported done
when the state read back afterwards agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trackingbms.model import Reading

#: the reads that show the effect of a write (and the faults that explain a refusal)
READBACK_COMMANDS = ("pack", "mos", "status", "faults")
SOC_TOLERANCE_PCT = 0.5


@dataclass
class WriteResult:
    reading: Reading
    #: one sentence per requested change that the read-back does not show
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def describe(charge_mos: bool | None, discharge_mos: bool | None, soc_pct: float | None) -> list[str]:
    """The plan in words, for a confirmation prompt or a log line."""
    plan = []
    if charge_mos is not None:
        plan.append(f"charge MOSFET {'ON' if charge_mos else 'OFF'}")
    if discharge_mos is not None:
        plan.append(f"discharge MOSFET {'ON' if discharge_mos else 'OFF'}")
    if soc_pct is not None:
        plan.append(f"SOC {soc_pct:.1f} % (and the BMS clock to now)")
    return plan


async def guarded_write(
    client: Any,
    *,
    charge_mos: bool | None = None,
    discharge_mos: bool | None = None,
    soc_pct: float | None = None,
) -> WriteResult:
    """Apply the requested changes through ``client`` (a BMS client), then read back and check them.

    Raises the client's errors (no reply, link lost, write not acknowledged) as they are."""
    if charge_mos is not None:
        await client.set_charge_mos(charge_mos)
    if discharge_mos is not None:
        await client.set_discharge_mos(discharge_mos)
    if soc_pct is not None:
        await client.set_soc(soc_pct)
    reading: Reading = await client.snapshot(list(READBACK_COMMANDS))
    failed = []
    held = "(a protection may hold it off: see faults)"
    if charge_mos is not None and reading.charge_mos is not charge_mos:
        failed.append(f"charge MOSFET did not switch {held}")
    if discharge_mos is not None and reading.discharge_mos is not discharge_mos:
        failed.append(f"discharge MOSFET did not switch {held}")
    off_pct = None if soc_pct is None or reading.soc_pct is None else abs(reading.soc_pct - soc_pct)
    if off_pct is not None and off_pct > SOC_TOLERANCE_PCT:
        failed.append(f"SOC reads {reading.soc_pct} %, not {soc_pct} %")
    return WriteResult(reading, failed)
