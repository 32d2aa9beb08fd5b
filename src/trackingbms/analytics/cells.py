"""Small derived figures from one sample: cell spread, temperature range, power."""

from __future__ import annotations

from typing import Any


def cell_stats(cells_mv: list[int] | None) -> tuple[int | None, int | None, int | None]:
    """(min, max, delta) in mV, or Nones when the sample has no cell voltages."""
    if not cells_mv:
        return None, None, None
    lo, hi = min(cells_mv), max(cells_mv)
    return lo, hi, hi - lo


def power_w(sample: dict[str, Any]) -> float | None:
    v, i = sample.get("voltage_v"), sample.get("current_a")
    if v is None or i is None:
        return None
    return round(v * i, 3)
