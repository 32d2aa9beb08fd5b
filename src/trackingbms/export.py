"""The CSV export format, shared by the server's ``export.csv``, ``simulate --record`` and ``analyze``.

One row per sample, oldest first: ``ts, seq``, the scalar fields in the model's order, ``faults``
(joined with ``;``), ``cell_1_mv … cell_N_mv``, ``temp_1_c … temp_M_c``, ``balancing`` (joined with
``;``), ``errors`` (JSON text). Absent values are empty. Written with the standard ``csv`` module; the
reader turns rows back into Sample-shaped dicts (absent fields left out, never zero-filled).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from trackingbms.model import MEASUREMENT_FIELDS, SAMPLE_FIELDS

#: fields with columns of their own (lists expanded or joined, errors as JSON) or none (battery_id)
SPECIAL_FIELDS = ("battery_id", "seq", "ts", "cells_mv", "temps_c", "balancing", "faults", "errors")
SCALAR_FIELDS: tuple[str, ...] = (
    "source",
    "via",
    *(f for f in MEASUREMENT_FIELDS if f not in SPECIAL_FIELDS),
)
if set(SCALAR_FIELDS) | set(SPECIAL_FIELDS) != set(SAMPLE_FIELDS):
    raise ImportError("export: the CSV columns do not cover trackingbms.model.SAMPLE_FIELDS")

_BOOLS = frozenset({"charge_mos", "discharge_mos", "charger_connected", "load_connected"})
_INTS = frozenset({"cycles", "fault_code"})
_TEXT = frozenset({"source", "via", "state"})


#: a text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): the
#: server's export writes a leading ``'`` before it, the reader takes it off again
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _plain_text(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


class ExportFormatError(ValueError):
    """A CSV that is not in the export format; the message names the line."""


def header(n_cells: int, n_temps: int) -> list[str]:
    return [
        "ts",
        "seq",
        *SCALAR_FIELDS,
        "faults",
        *(f"cell_{i}_mv" for i in range(1, n_cells + 1)),
        *(f"temp_{i}_c" for i in range(1, n_temps + 1)),
        "balancing",
        "errors",
    ]


def _val(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return spreadsheet_text(v)
    return v


def row(sample: dict[str, Any], n_cells: int, n_temps: int) -> list[Any]:
    """One sample (wire dict) as a CSV row under :func:`header`."""
    cells = sample.get("cells_mv") or []
    temps = sample.get("temps_c") or []
    faults = sample.get("faults")
    balancing = sample.get("balancing")
    errors = sample.get("errors")
    return [
        sample["ts"],
        sample["seq"],
        *(_val(sample.get(k)) for k in SCALAR_FIELDS),
        spreadsheet_text(";".join(faults)) if faults is not None else "",
        *(cells[i] if i < len(cells) else "" for i in range(n_cells)),
        *(temps[i] if i < len(temps) else "" for i in range(n_temps)),
        ";".join(map(str, balancing)) if balancing is not None else "",
        spreadsheet_text(json.dumps(errors, separators=(",", ":"))) if errors else "",
    ]


def read_rows(rows: Iterable[list[str]]) -> Iterator[dict[str, Any]]:
    """CSV rows (header first, e.g. from ``csv.reader``) → sample dicts in file order.

    Raises :class:`ExportFormatError` naming the line for a missing header column or a bad value.
    """
    it = iter(rows)
    try:
        head = next(it)
    except StopIteration:
        raise ExportFormatError("empty file: expected the export header (ts,seq,...)") from None
    index = {name: k for k, name in enumerate(head)}
    for need in ("ts", "seq"):
        if need not in index:
            raise ExportFormatError(f"line 1: no {need!r} column; is this a TrackingBMS CSV export?")
    cell_cols = [index[c] for c in _numbered(head, "cell_", "_mv")]
    temp_cols = [index[c] for c in _numbered(head, "temp_", "_c")]
    scalars = [(k, index[k]) for k in SCALAR_FIELDS if k in index]
    i_ts, i_seq = index["ts"], index["seq"]
    i_faults, i_bal, i_err = index.get("faults"), index.get("balancing"), index.get("errors")
    for line, r in enumerate(it, start=2):
        if not r:
            continue
        try:
            s: dict[str, Any] = {"ts": r[i_ts], "seq": int(r[i_seq])}
            for k, i in scalars:
                v = r[i]
                if v == "":
                    continue
                if k in _TEXT:
                    s[k] = _plain_text(v)
                elif k in _BOOLS:
                    s[k] = v == "true"
                elif k in _INTS:
                    s[k] = int(v)
                else:
                    s[k] = float(v)
            cells = [r[i] for i in cell_cols]
            if cells and all(cells):
                s["cells_mv"] = [int(c) for c in cells]
            temps = [r[i] for i in temp_cols]
            if temps and all(t != "" for t in temps):
                s["temps_c"] = [float(t) for t in temps]
            if i_faults is not None and r[i_faults]:
                s["faults"] = _plain_text(r[i_faults]).split(";")
            if i_bal is not None and r[i_bal]:
                s["balancing"] = [int(b) for b in r[i_bal].split(";")]
            if i_err is not None and r[i_err]:
                s["errors"] = json.loads(_plain_text(r[i_err]))
        except (IndexError, ValueError) as exc:
            raise ExportFormatError(f"line {line}: {exc}") from None
        yield s


def _numbered(head: list[str], prefix: str, suffix: str) -> list[str]:
    cols = [
        c
        for c in head
        if c.startswith(prefix) and c.endswith(suffix) and c[len(prefix) : -len(suffix)].isdigit()
    ]
    return sorted(cols, key=lambda c: int(c[len(prefix) : -len(suffix)]))
