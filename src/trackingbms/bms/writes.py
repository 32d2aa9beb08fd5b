"""Guarded writes: switch a MOSFET or set the SOC, then read the BMS back and say what did not take.

One path for every writer (``trackingbms set``, Home Assistant's switches on the gateway): a Daly BMS
acknowledges a MOSFET write even when a protection holds the MOSFET off, so a write is only reported done
when the state read back afterwards agrees. Each client's ``set_mosfet`` / ``set_soc`` already reads its
own write back (:class:`~trackingbms.bms.base.BmsWriteError` when it did not take); here every requested
change is tried, the pack is read once more for the caller to show, and what did not take is listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trackingbms.bms.base import BmsWriteError

if TYPE_CHECKING:
    from trackingbms.model import Reading

#: the reads that show the effect of a write (and the faults that explain a refusal)
READBACK_GROUPS = ("pack", "mos", "status", "faults")
SOC_TOLERANCE_PCT = 0.5
HELD_OFF = "(a protection may hold it off: see faults)"


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
    """Apply the requested changes through ``client`` (a :class:`~trackingbms.bms.BmsClient`), then read
    back and check them. A change that did not take is listed in ``failed``; the client's other errors (no
    reply, link lost) are raised as they are."""
    failed: list[str] = []
    for which, on in (("charge", charge_mos), ("discharge", discharge_mos)):
        if on is None:
            continue
        try:
            await client.set_mosfet(which, on)
        except BmsWriteError as exc:
            failed.append(f"{which} MOSFET did not switch {HELD_OFF}: {exc}")
    if soc_pct is not None:
        try:
            await client.set_soc(soc_pct)
        except BmsWriteError as exc:
            failed.append(f"SOC not set: {exc}")
    reading: Reading = await client.snapshot(list(READBACK_GROUPS))
    if not failed:  # the final read agrees too (another writer may have been quicker)
        if charge_mos is not None and reading.charge_mos is not charge_mos:
            failed.append(f"charge MOSFET did not switch {HELD_OFF}")
        if discharge_mos is not None and reading.discharge_mos is not discharge_mos:
            failed.append(f"discharge MOSFET did not switch {HELD_OFF}")
        off_pct = None if soc_pct is None or reading.soc_pct is None else abs(reading.soc_pct - soc_pct)
        if off_pct is not None and off_pct > SOC_TOLERANCE_PCT:
            failed.append(f"SOC reads {reading.soc_pct} %, not {soc_pct} %")
    return WriteResult(reading, failed)
