"""Small derived figures from one sample: cell spread, temperature range, power, and the history series.

Each formula is written once here; the server's ingest (packing), its rollups and its history reads, and the
fleet view all take them from this module.
"""

from __future__ import annotations

from typing import Any

#: the series of the history view, in this order in :func:`series_point` and in the rollup table
SERIES: tuple[str, ...] = (
    "voltage_v",
    "current_a",
    "soc_pct",
    "power_w",
    "cell_min_mv",
    "cell_max_mv",
    "cell_delta_mv",
    "temp_max_c",
    "temp_min_c",
)

#: one value per :data:`SERIES` name (None where the sample did not carry it)
SeriesPoint = tuple[float | int | None, ...]


def cell_stats(cells_mv: list[int] | None) -> tuple[int | None, int | None, int | None]:
    """(min, max, delta) in mV, or Nones when the sample has no cell voltages."""
    if not cells_mv:
        return None, None, None
    lo, hi = min(cells_mv), max(cells_mv)
    return lo, hi, hi - lo


def pack_power_w(voltage_v: float | None, current_a: float | None) -> float | None:
    """Power into the pack (positive = charging), rounded to the mW."""
    if voltage_v is None or current_a is None:
        return None
    return round(voltage_v * current_a, 3)


def power_w(sample: dict[str, Any]) -> float | None:
    return pack_power_w(sample.get("voltage_v"), sample.get("current_a"))


def series_point(
    voltage_v: float | None,
    current_a: float | None,
    soc_pct: float | None,
    cell_min_mv: int | None,
    cell_max_mv: int | None,
    temp_min_c: float | None,
    temp_max_c: float | None,
) -> SeriesPoint:
    """The :data:`SERIES` values of one sample from its measurements (cell / temperature extremes given)."""
    return (
        voltage_v,
        current_a,
        soc_pct,
        pack_power_w(voltage_v, current_a),
        cell_min_mv,
        cell_max_mv,
        cell_max_mv - cell_min_mv if cell_min_mv is not None and cell_max_mv is not None else None,
        temp_max_c,
        temp_min_c,
    )


def series_of(sample: dict[str, Any]) -> SeriesPoint:
    """The :data:`SERIES` values of a wire sample (or decoded measurement dict)."""
    lo, hi, _ = cell_stats(sample.get("cells_mv"))
    temps = sample.get("temps_c")
    return series_point(
        sample.get("voltage_v"),
        sample.get("current_a"),
        sample.get("soc_pct"),
        lo,
        hi,
        min(temps) if temps else None,
        max(temps) if temps else None,
    )
