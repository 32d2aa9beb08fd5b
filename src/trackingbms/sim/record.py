"""Record what a gateway would have stored, in simulated time, as fast as the physics runs.

No protocol, no sockets: the sample is built from the battery at the wire's resolution (voltage 0.1 V,
current 0.1 A, SOC 0.1 %, cells 1 mV, temperatures 1 °C), which is what the A5 responder would have
encoded and the client decoded. Used by ``trackingbms simulate --record`` and ``bench/analytics.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from trackingbms.model import format_ts
from trackingbms.sim.battery import Battery
from trackingbms.sim.config import PackConfig

_STATES = ("idle", "charging", "discharging")


def sample_of(battery: Battery, seq: int) -> dict[str, Any]:
    """The wire dict a gateway would have queued for this battery now."""
    b = battery
    measured = b.measured_current_a()
    cells = b.cells_mv()
    return {
        "battery_id": b.cfg.pack_id,
        "seq": seq,
        "ts": format_ts(b.cfg.start + timedelta(seconds=b.t_s)),
        "source": "sim",
        "voltage_v": round(sum(cells) / 1000, 1),
        "current_a": round(measured, 1),
        "soc_pct": round(b.bms_soc_pct, 1),
        "remaining_ah": round(b.bms_soc_pct / 100 * b.rated_ah, 3),
        "cycles": b.cycles,
        "state": _STATES[0 if measured == 0 else (1 if measured > 0 else 2)],
        "charge_mos": b.charge_mos,
        "discharge_mos": b.discharge_mos,
        "charger_connected": b.requested_a > 0,
        "load_connected": b.requested_a < 0,
        "cells_mv": cells,
        "temps_c": [float(t) for t in b.temps_c()],
        "balancing": b.balancing(),
        "faults": b.faults(),
        "fault_code": 0,
    }


class Recorder:
    """A battery and its sampling loop; :meth:`truth` is the ground truth at the last sample."""

    def __init__(self, cfg: PackConfig) -> None:
        self.battery = Battery(cfg)
        self.seq = 0

    def run(self, duration_s: float, interval_s: float) -> Iterator[dict[str, Any]]:
        """Samples every ``interval_s`` simulated seconds for ``duration_s``, the first at the current time.

        Physics moves in ``cfg.step_s`` steps; an interval that is not a multiple of it is rounded to one.
        """
        b = self.battery
        step = b.cfg.step_s
        per = max(1, round(interval_s / step))
        n = int(duration_s / (per * step))
        for k in range(n + 1):
            if k:
                for _ in range(per):
                    b.step(step)
            self.seq += 1
            yield sample_of(b, self.seq)

    def truth(self) -> dict[str, Any]:
        return self.battery.truth()
