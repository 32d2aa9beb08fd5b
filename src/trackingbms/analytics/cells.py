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


def derived(sample: dict[str, Any]) -> dict[str, Any]:
    """The series the history view plots, from one sample (missing inputs give None, never 0)."""
    lo, hi, delta = cell_stats(sample.get("cells_mv"))
    temps = sample.get("temps_c") or None
    return {
        "voltage_v": sample.get("voltage_v"),
        "current_a": sample.get("current_a"),
        "soc_pct": sample.get("soc_pct"),
        "power_w": power_w(sample),
        "cell_min_mv": lo,
        "cell_max_mv": hi,
        "cell_delta_mv": delta,
        "temp_max_c": max(temps) if temps else None,
        "temp_min_c": min(temps) if temps else None,
    }
