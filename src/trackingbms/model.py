"""The one data model shared by every part: decoder output, gateway queue, ingest API, storage, exports.

Field names follow the Sample wire contract v1 in design.md. Units are in the names.
Any field but ``battery_id``, ``seq`` and ``ts`` may be missing (``None``) when the command that
carries it failed: a partial reading stays partial, it is never filled with zeros.

:class:`Reading` and :class:`Sample` (the contract as pydantic models) are defined in
:mod:`trackingbms.sample` and resolved here on first use (PEP 562), so that ``from trackingbms.model
import Reading, Sample`` keeps working everywhere while a module that needs only the names, the literals
and the formats below (the BMS clients up to their first reply: ``trackingbms read``) does not pay for
importing pydantic (~45 ms of a CLI start-up, issue 14).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from trackingbms.sample import Reading as Reading
    from trackingbms.sample import Sample as Sample

#: the names :func:`__getattr__` resolves from :mod:`trackingbms.sample` (pydantic) on first use
_PYDANTIC_MODELS = ("Reading", "Sample")


def __getattr__(name: str) -> Any:
    if name not in _PYDANTIC_MODELS:
        raise AttributeError(f"module 'trackingbms.model' has no attribute {name!r}")
    from trackingbms import sample

    value = getattr(sample, name)
    globals()[name] = value
    return value


#: the battery-id rule (design.md): what a ``battery_id`` may be, for messages and for pydantic
BATTERY_ID_RULE = "[A-Za-z0-9._-]{1,64}"
BATTERY_ID_PATTERN = rf"^{BATTERY_ID_RULE}$"
_BATTERY_ID_RE = re.compile(BATTERY_ID_RULE)


def is_battery_id(value: object) -> bool:
    """True if ``value`` is a valid battery id (a trailing newline is not: fullmatch, not ``$``)."""
    return isinstance(value, str) and _BATTERY_ID_RE.fullmatch(value) is not None


# The order of these values is part of the server's storage format (stored as small codes): append only.
Source = Literal[
    "a5-uart", "a5-rs485", "a5-can", "a5-ble", "d2-rs485", "d2-ble", "sim", "p81-rs485", "hkms-can"
]
Via = Literal["lan", "wifi", "cellular", "mqtt", "phone", "ble"]
PackState = Literal["idle", "charging", "discharging"]
#: the gateway's word on a BMS link (heartbeat ``link_state``)
LinkState = Literal["ok", "degraded", "asleep", "disconnected"]
#: a battery's connectivity as users see it (design.md "Connectivity"), computed by the server
Connectivity = Literal["online", "asleep", "link-down", "offline", "backfilling"]

SOURCES: tuple[str, ...] = get_args(Source)
VIAS: tuple[str, ...] = get_args(Via)
STATES: tuple[str, ...] = get_args(PackState)

#: measurement fields, in wire order; everything a reading can carry besides identity and time
MEASUREMENT_FIELDS: tuple[str, ...] = (
    "voltage_v",
    "current_a",
    "soc_pct",
    "remaining_ah",
    "cycles",
    "state",
    "charge_mos",
    "discharge_mos",
    "charger_connected",
    "load_connected",
    "cells_mv",
    "temps_c",
    "balancing",
    "faults",
    "fault_code",
)

#: every field of a Sample, in wire order
SAMPLE_FIELDS: tuple[str, ...] = ("battery_id", "seq", "ts", "source", "via", *MEASUREMENT_FIELDS, "errors")


def utc_now() -> datetime:
    """Now, in UTC, truncated to milliseconds (the wire's resolution)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-24T10:29:25.123Z``."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


# -- the phone relay's receipt (docs/api.md "Phone relay", docs/architecture.md) -------------------------
#
# A phone carries a gateway's unsent samples to the server (``via = "phone"``) and the server's receipt back,
# so that the gateway stops holding what the server has. The receipt is signed with a key both ends have
# and nobody else on the LAN: the SHA-256 of the device's token (the gateway computes it from its
# configuration; the server stores tokens only as that hash). A LAN client that forges or alters a receipt
# cannot make the gateway drop unsent data. Defined here, once, because the server and the gateway may not
# import each other (they meet at the wire contract, which is this module).

#: version of the receipt (``{"v": 1, "payload": "<JSON text>", "sig": "<hex>"}``)
RELAY_RECEIPT_VERSION = 1
_RELAY_KEY_ID_TAG = b"trackingbms relay key-id v1"
_RELAY_RECEIPT_TAG = b"trackingbms relay receipt v1\n"


def relay_key(device_token: str) -> bytes:
    """The key a device's relay receipts are signed with: SHA-256 of its token (the server has it stored as
    ``device_tokens.token_hash``, in hex)."""
    import hashlib  # here, not at the top: the relay's hashes are not on a BMS read's path (issue 14)

    return hashlib.sha256(device_token.encode()).digest()


def relay_key_id(key: bytes) -> str:
    """What the gateway hands the phone to say which device it is, and what the server finds the device by:
    an HMAC of a fixed text, so it reveals nothing of the key."""
    import hashlib
    import hmac

    return hmac.new(key, _RELAY_KEY_ID_TAG, hashlib.sha256).hexdigest()[:32]


def relay_signature(key: bytes, payload: str) -> str:
    """HMAC-SHA256 of the receipt's payload text, exactly as it travels (no re-serialising on either side)."""
    import hashlib
    import hmac

    return hmac.new(key, _RELAY_RECEIPT_TAG + payload.encode(), hashlib.sha256).hexdigest()


def relay_signature_ok(key: bytes, payload: str, sig: str) -> bool:
    import hmac

    return hmac.compare_digest(relay_signature(key, payload), sig)


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Runs of consecutive seqs, ``[first, last]``, sorted (``[3, 1, 2, 7]`` → ``[[1, 3], [7, 7]]``)."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


# ---- the CSV export format -------------------------------------------------------------------------
# One definition for the server's ``export.csv``, ``trackingbms simulate --record`` and
# ``trackingbms analyze``. One row per sample, oldest first: ``ts, seq``, the scalar fields in the model's
# order, ``faults`` (joined with ``;``), ``cell_1_mv … cell_N_mv``, ``temp_1_c … temp_M_c``, ``balancing``
# (joined with ``;``), ``errors`` (JSON text). Absent values are empty; the reader turns rows back into
# Sample-shaped dicts (absent fields left out, never zero-filled). Rows are lists for the standard ``csv``
# module: no I/O here.

#: fields with columns of their own (lists expanded or joined, errors as JSON) or none (battery_id)
CSV_SPECIAL_FIELDS = ("battery_id", "seq", "ts", "cells_mv", "temps_c", "balancing", "faults", "errors")
CSV_SCALAR_FIELDS: tuple[str, ...] = (
    "source",
    "via",
    *(f for f in MEASUREMENT_FIELDS if f not in CSV_SPECIAL_FIELDS),
)
if set(CSV_SCALAR_FIELDS) | set(CSV_SPECIAL_FIELDS) != set(SAMPLE_FIELDS):
    raise ImportError("model: the CSV columns do not cover trackingbms.model.SAMPLE_FIELDS")

_CSV_BOOLS = frozenset({"charge_mos", "discharge_mos", "charger_connected", "load_connected"})
_CSV_INTS = frozenset({"cycles", "fault_code"})
_CSV_TEXT = frozenset({"source", "via", "state"})


#: a text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"): the
#: server's export writes a leading ``'`` before it, the reader takes it off again
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """Text as a spreadsheet will show it, never evaluate it: a leading ``'`` before a formula start.
    Only for text: numbers (negative ones included) are written as numbers and never pass here."""
    return "'" + text if text.startswith(_CSV_FORMULA_START) else text


def _plain_text(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_CSV_FORMULA_START) else text


class ExportFormatError(ValueError):
    """A CSV that is not in the export format; the message names the line."""


def csv_header(n_cells: int, n_temps: int) -> list[str]:
    return [
        "ts",
        "seq",
        *CSV_SCALAR_FIELDS,
        "faults",
        *(f"cell_{i}_mv" for i in range(1, n_cells + 1)),
        *(f"temp_{i}_c" for i in range(1, n_temps + 1)),
        "balancing",
        "errors",
    ]


def _csv_val(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return spreadsheet_text(v)
    return v


def csv_row(sample: dict[str, Any], n_cells: int, n_temps: int) -> list[Any]:
    """One sample (wire dict) as a CSV row under :func:`csv_header`."""
    cells = sample.get("cells_mv") or []
    temps = sample.get("temps_c") or []
    faults = sample.get("faults")
    balancing = sample.get("balancing")
    errors = sample.get("errors")
    return [
        sample["ts"],
        sample["seq"],
        *(_csv_val(sample.get(k)) for k in CSV_SCALAR_FIELDS),
        spreadsheet_text(";".join(faults)) if faults is not None else "",
        *(cells[i] if i < len(cells) else "" for i in range(n_cells)),
        *(temps[i] if i < len(temps) else "" for i in range(n_temps)),
        ";".join(map(str, balancing)) if balancing is not None else "",
        spreadsheet_text(json.dumps(errors, separators=(",", ":"), ensure_ascii=False)) if errors else "",
    ]


def read_csv_rows(rows: Iterable[list[str]]) -> Iterator[dict[str, Any]]:
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
    scalars = [(k, index[k]) for k in CSV_SCALAR_FIELDS if k in index]
    i_ts, i_seq = index["ts"], index["seq"]
    i_faults, i_bal, i_err = index.get("faults"), index.get("balancing"), index.get("errors")
    for line, r in enumerate(it, start=2):
        if not r:
            continue
        col = "seq"  # the column being read, for the error
        try:
            s: dict[str, Any] = {"ts": r[i_ts], "seq": int(r[i_seq])}
            for k, i in scalars:
                col = k
                v = r[i]
                if v == "":
                    continue
                if k in _CSV_TEXT:
                    s[k] = _plain_text(v)
                elif k in _CSV_BOOLS:
                    s[k] = v == "true"
                elif k in _CSV_INTS:
                    s[k] = int(v)
                else:
                    s[k] = float(v)
            col = "cell_*_mv"
            cells = [r[i] for i in cell_cols]
            if cells and all(cells):
                s["cells_mv"] = [int(c) for c in cells]
            col = "temp_*_c"
            temps = [r[i] for i in temp_cols]
            if temps and all(t != "" for t in temps):
                s["temps_c"] = [float(t) for t in temps]
            if i_faults is not None and r[i_faults]:
                s["faults"] = _plain_text(r[i_faults]).split(";")
            col = "balancing"
            if i_bal is not None and r[i_bal]:
                s["balancing"] = [int(b) for b in r[i_bal].split(";")]
            col = "errors"
            if i_err is not None and r[i_err]:
                s["errors"] = json.loads(_plain_text(r[i_err]))
        except IndexError:
            raise ExportFormatError(f"line {line}: fewer fields than the header names") from None
        except ValueError as exc:
            raise ExportFormatError(f"line {line}, column {col}: {exc}") from None
        yield s


def _numbered(head: list[str], prefix: str, suffix: str) -> list[str]:
    cols = [
        c
        for c in head
        if c.startswith(prefix) and c.endswith(suffix) and c[len(prefix) : -len(suffix)].isdigit()
    ]
    return sorted(cols, key=lambda c: int(c[len(prefix) : -len(suffix)]))
