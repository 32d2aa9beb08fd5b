"""Command: ``trackingbms analyze FILE.csv`` — the health engine over a CSV in the server's export format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trackingbms.cli.app import app


@app.command()
def analyze(
    file: Annotated[
        Path, typer.Argument(help="CSV in the export format (dashboard export, simulate --record).")
    ],
    capacity_ah: Annotated[
        float | None,
        typer.Option("--capacity-ah", min=0.1, help="Rated capacity (Ah); default: what the BMS reports."),
    ] = None,
    chemistry: Annotated[
        str | None, typer.Option(help="lfp, nmc or lto; default: guessed from the cells.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Capacity / SOH, resistance, SOC and the BMS's SOC error, weak cells: what the data can tell."""
    import csv
    import json

    from trackingbms.analytics import BatteryEstimator, EstimatorConfig
    from trackingbms.model import ExportFormatError
    from trackingbms.model import read_csv_rows as read_rows

    if chemistry is not None and chemistry.lower() not in ("lfp", "nmc", "lto"):
        raise typer.BadParameter("choose lfp, nmc or lto", param_hint="--chemistry")
    est = BatteryEstimator(
        EstimatorConfig(rated_capacity_ah=capacity_ah, chemistry=chemistry.lower() if chemistry else None),
        battery_id=file.stem,
    )
    try:
        with open(file, newline="") as fh:
            for sample in read_rows(csv.reader(fh)):
                est.update(sample)
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except (ExportFormatError, csv.Error, UnicodeDecodeError) as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    health = est.health()
    if as_json:
        typer.echo(json.dumps(health, indent=1))
        return
    typer.echo(_table(health))


def _fmt(v: Any, unit: str = "") -> str:
    return "—" if v is None else f"{v:g}{unit}" if isinstance(v, float | int) else str(v)


def _table(h: dict[str, Any]) -> str:
    reasons = h["reasons"]

    def line(label: str, key: str, unit: str) -> str:
        why = f"  ({reasons[key]})" if h.get(key) is None and key in reasons else ""
        return f"{label:<22}{_fmt(h.get(key), unit)}{why}"

    lines = [
        f"{'samples':<22}{h['samples']} over {h['span_h']:g} h ({h['chemistry']})",
        line("capacity", "capacity_ah", " Ah"),
        line("state of health", "soh_pct", " %")
        + (
            f"  [{h['capacity']['segments']} segments, {h['capacity']['confidence']} confidence]"
            if h.get("soh_pct") is not None
            else ""
        ),
        line("resistance (25 °C)", "resistance_mohm", " mΩ"),
        line("SOC (engine)", "soc_pct", " %"),
        line("BMS SOC error", "bms_soc_error_pct", " pts"),
        f"{'weak cells':<22}{', '.join(map(str, h['weak_cells'])) or 'none'}",
    ]
    for f in h["findings"]:
        lines.append(f"  - {f['message']}")
    return "\n".join(lines)
