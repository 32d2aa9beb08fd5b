"""Storage packing (not a Daly codec): the ingest hot path validates wire samples without per-sample pydantic
and packs each into a compact binary row; reads unpack them.

Hand-written rather than a serialisation library: a presence mask and wire resolutions give ~57 bytes for a
16S sample, and validating while packing avoids building a pydantic object per sample. A batch goes through
:func:`validate_batch`: samples with the same keys are checked a column at a time (set / min / max over a
column run in C) and packed as one numpy matrix of rows, their times read a column at a time when written as
gateways write them (:func:`_ts_column_ms`), the way columnar engines vectorise; no library validates and
packs this layout, and anything unusual falls back to :func:`validate_and_pack` (and :func:`parse_ts_ms`),
the reference the batch path is tested against. Reading back works the same way: :func:`unpack_many` (and
:func:`unpack_joined`, for a segment's rows) decodes rows of one layout a column at a time, :func:`unpack`
being its reference.

A stored sample is ``(stream_id, seq, ts_ms, data)`` where ``data`` is a small binary blob: a presence mask
says which measurement fields are there, so a partial sample stays partial (absent is never stored as zero).
Stored resolutions: voltage 1 mV, current 1 mA, SOC 0.01 %, remaining capacity 1 mAh, temperature 0.1 °C.
A 16S sample with 4 temperature sensors packs into about 57 bytes.

Layout (little-endian): ``u16 mask, u8 source|via<<4``, then for each mask bit in order:
voltage u32 mV, current i32 mA, soc u16 0.01 %, remaining u32 mAh, cycles u16, state u8,
one flags byte for the four booleans (bits 6-9), cells (u8 n, u8 mode, mode 0: u16 first + i8 delta
from first for the rest; mode 1: u16 each), temps (u8 n, i16 0.1 °C each), balancing (u8 n, u8 each),
faults (u8 length, comma-joined UTF-8), fault_code u8, errors (u16 length, JSON UTF-8).
"""

from __future__ import annotations

import itertools
import math
import operator
import struct
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson

from trackingbms.analytics.cells import SeriesPoint, series_of, series_point
from trackingbms.model import (
    BATTERY_ID_RULE,
    MEASUREMENT_FIELDS,
    SAMPLE_FIELDS,
    SOURCES,
    STATES,
    VIAS,
    format_ts,
    is_battery_id,
)

_SOURCE_CODE = {s: i + 1 for i, s in enumerate(SOURCES)}
_VIA_CODE = {s: i + 1 for i, s in enumerate(VIAS)}
_STATE_CODE = {s: i for i, s in enumerate(STATES)}
_BOOLS = ("charge_mos", "discharge_mos", "charger_connected", "load_connected")

B_VOLT, B_CURR, B_SOC, B_REM, B_CYC, B_STATE = 1, 2, 4, 8, 16, 32
B_CHG, B_DSG, B_CHARGER, B_LOAD = 64, 128, 256, 512
B_CELLS, B_TEMPS, B_BAL, B_FAULTS, B_FCODE, B_ERRORS = 1024, 2048, 4096, 8192, 16384, 32768
_BOOL_BITS = (B_CHG, B_DSG, B_CHARGER, B_LOAD)

#: the measurement fields and their presence bits (what a battery's last known state is made of)
FIELD_BITS: tuple[tuple[str, int], ...] = (
    ("voltage_v", B_VOLT),
    ("current_a", B_CURR),
    ("soc_pct", B_SOC),
    ("remaining_ah", B_REM),
    ("cycles", B_CYC),
    ("state", B_STATE),
    ("charge_mos", B_CHG),
    ("discharge_mos", B_DSG),
    ("charger_connected", B_CHARGER),
    ("load_connected", B_LOAD),
    ("cells_mv", B_CELLS),
    ("temps_c", B_TEMPS),
    ("balancing", B_BAL),
    ("faults", B_FAULTS),
    ("fault_code", B_FCODE),
)
# The bits are the stored format (every blob on disk carries them), so they stay spelled out here rather
# than derived from the model's order; a field added to the model must get its bit (and a migration story)
# here, and this check says so at import instead of letting such a field be dropped silently.
if tuple(name for name, _ in FIELD_BITS) != MEASUREMENT_FIELDS:
    raise ImportError("packing.FIELD_BITS does not match trackingbms.model.MEASUREMENT_FIELDS")


def presence_mask(data: bytes) -> int:
    """The presence mask of a packed row (which fields it carries), without unpacking it."""
    return data[0] | data[1] << 8


#: samples older than this are refused (a wrong clock, not a reading); newer than now + skew too. A
#: sample from the future would stand as the battery's latest value until the clock catches up, so the
#: default window is small: a gateway's clock must be roughly right (NTP); the server setting
#: ``max_clock_skew_s`` changes it
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000

#: the fields a wire sample may carry
_KNOWN = frozenset(SAMPLE_FIELDS)

_HDR = struct.Struct("<HB")
_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


#: a sample's values of the history series (:data:`trackingbms.analytics.cells.SERIES`)
Stats = SeriesPoint


class SampleError(ValueError):
    """A sample that can never be stored; the message names the field."""


_INT_ONLY = frozenset((int,))
_NUMBER = frozenset((int, float))  # exact types: bool is an int subclass and is refused


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d[key]
    if type(v) is not int:
        raise SampleError(f"{key}: must be an integer")
    if v < lo or v > hi:
        raise SampleError(f"{key}: {v} is out of range ({lo} to {hi})")
    return v


def _range(key: str, v: Any, scale: int, lo: int, hi: int) -> SampleError:
    return SampleError(f"{key}: {v} is out of range ({lo / scale} to {hi / scale})")


_SCALAR_FMT = ((B_VOLT, "I"), (B_CURR, "i"), (B_SOC, "H"), (B_REM, "I"), (B_CYC, "H"), (B_STATE, "B"))
_SCALARS: dict[int, struct.Struct] = {}


def _scalar_struct(mask: int) -> struct.Struct:
    fmt = "<" + "".join(f for bit, f in _SCALAR_FMT if mask & bit) + ("B" if mask & 0x3C0 else "")
    st = _SCALARS[mask] = struct.Struct(fmt)
    return st


_CELLS_COMPACT: dict[int, struct.Struct] = {}
_CELLS_RAW: dict[int, struct.Struct] = {}
_TEMPS: dict[int, struct.Struct] = {}


def _cached(cache: dict[int, struct.Struct], n: int, fmt: str) -> struct.Struct:
    st = cache.get(n)
    if st is None:
        st = cache[n] = struct.Struct(fmt)
    return st


def _pack_cells(cells: Any) -> tuple[bytes, int | None, int | None]:
    """Packed cells and their (min, max) in mV."""
    if type(cells) is not list or len(cells) > 255:
        raise SampleError("cells_mv: must be a list of at most 255 integers")
    n = len(cells)
    if n == 0:
        return b"\x00\x00", None, None
    # fast path: C-level checks; the slow loop below only runs to name the bad element
    if _INT_ONLY.issuperset(map(type, cells)):
        lo = min(cells)
        hi = max(cells)
        if lo >= 0 and hi <= 65535:
            return _cells_bytes(cells, lo, hi), lo, hi
    for i, c in enumerate(cells):
        if type(c) is not int or c < 0 or c > 65535:
            raise SampleError(f"cells_mv.{i}: must be an integer 0 to 65535")
    raise SampleError("cells_mv: invalid")  # pragma: no cover


def _pack_temps(temps: Any) -> tuple[bytes, float | None, float | None]:
    """Packed temperatures and their (min, max) in °C at the stored resolution."""
    if type(temps) is not list or len(temps) > 255:
        raise SampleError("temps_c: must be a list of at most 255 numbers")
    n = len(temps)
    if n == 0:
        return b"\x00", None, None
    if _NUMBER.issuperset(map(type, temps)):
        try:
            vals = [round(t * 10) for t in temps]
        except (OverflowError, ValueError):
            vals = None
        if vals is not None:
            lo, hi = min(vals), max(vals)
            if lo >= -32768 and hi <= 32767:
                st = _temps_struct(n)
                return st.pack(n, *vals), lo / 10, hi / 10
    for i, t in enumerate(temps):
        if type(t) not in _NUMBER or not math.isfinite(t) or not -3276.8 <= t <= 3276.7:
            raise SampleError(f"temps_c.{i}: must be a number from -3276.8 to 3276.7")
    raise SampleError("temps_c: invalid")  # pragma: no cover


def parse_ts_ms(v: Any, key: str = "ts") -> int:
    if not isinstance(v, str):
        raise SampleError(f"{key}: must be an RFC 3339 string")
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise SampleError(f"{key}: {v!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise SampleError(f"{key}: must carry a timezone (e.g. 2026-11-24T10:00:00.000Z)")
    try:
        dt = dt.astimezone(UTC)  # 0001-01-01T00:00+23:59 is in year 0: no datetime can hold it
    except OverflowError:
        raise SampleError(f"{key}: {v!r} is out of range (years 1 to 9999 in UTC)") from None
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000


def _duration(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def validate_and_pack(
    d: Any, now_ms: int | None = None, max_future_ms: int = MAX_FUTURE_SKEW_MS
) -> tuple[str, int, int, bytes, Stats]:
    """Check one wire sample and pack it: ``(battery_id, seq, ts_ms, data, stats)``, or raise SampleError.
    ``stats`` holds the sample's values of :data:`SERIES` (None where absent)."""
    if type(d) is not dict:
        raise SampleError("sample: must be an object")
    if not _KNOWN.issuperset(d):
        raise SampleError(f"{next(k for k in d if k not in _KNOWN)}: unknown field")
    bid = d.get("battery_id")
    if not is_battery_id(bid):
        raise SampleError(f"battery_id: must match {BATTERY_ID_RULE}")
    if "seq" not in d:
        raise SampleError("seq: field required")
    seq = _int(d, "seq", 0, 2**63 - 1)
    if "ts" not in d:
        raise SampleError("ts: field required")
    ts_ms = parse_ts_ms(d["ts"])
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    if ts_ms < MIN_TS_MS:
        raise SampleError(f"ts: {d['ts']} is before 2000: the device's clock is not set")
    if ts_ms > now_ms + max_future_ms:
        raise SampleError(
            f"ts: {d['ts']} is {_duration((ts_ms - now_ms) / 1000)} ahead of the server's clock "
            f"(at most {_duration(max_future_ms / 1000)} allowed): check the device's clock (NTP)"
        )

    g = d.get
    mask = 0
    sv = 0
    src = g("source")
    if src is not None:
        c = _SOURCE_CODE.get(src) if type(src) is str else None
        if c is None:
            raise SampleError(f"source: must be one of {', '.join(SOURCES)}")
        sv = c
    via = g("via")
    if via is not None:
        c = _VIA_CODE.get(via) if type(via) is str else None
        if c is None:
            raise SampleError(f"via: must be one of {', '.join(VIAS)}")
        sv |= c << 4

    # scalars, inlined (this runs for every sample of every batch); one struct for all of them
    vals: list[int] = []
    volt = curr = soc = None
    key = "voltage_v"
    try:
        v = g("voltage_v")
        if v is not None:
            if type(v) not in _NUMBER:
                raise SampleError("voltage_v: must be a number")
            volt = round(v * 1000)
            if not 0 <= volt <= 4294967295:
                raise _range("voltage_v", v, 1000, 0, 4294967295)
            mask = B_VOLT
            vals.append(volt)
        key = "current_a"
        v = g("current_a")
        if v is not None:
            if type(v) not in _NUMBER:
                raise SampleError("current_a: must be a number")
            curr = round(v * 1000)
            if not -2147483648 <= curr <= 2147483647:
                raise _range("current_a", v, 1000, -2147483648, 2147483647)
            mask |= B_CURR
            vals.append(curr)
        key = "soc_pct"
        v = g("soc_pct")
        if v is not None:
            if type(v) not in _NUMBER:
                raise SampleError("soc_pct: must be a number")
            soc = round(v * 100)
            if not 0 <= soc <= 65535:
                raise _range("soc_pct", v, 100, 0, 65535)
            mask |= B_SOC
            vals.append(soc)
        key = "remaining_ah"
        v = g("remaining_ah")
        if v is not None:
            if type(v) not in _NUMBER:
                raise SampleError("remaining_ah: must be a number")
            x = round(v * 1000)
            if not 0 <= x <= 4294967295:
                raise _range("remaining_ah", v, 1000, 0, 4294967295)
            mask |= B_REM
            vals.append(x)
    except SampleError:
        raise
    except (OverflowError, ValueError):  # inf / nan
        raise SampleError(f"{key}: must be finite") from None
    v = g("cycles")
    if v is not None:
        mask |= B_CYC
        vals.append(_int(d, "cycles", 0, 65535))
    st = g("state")
    if st is not None:
        c = _STATE_CODE.get(st) if type(st) is str else None
        if c is None:
            raise SampleError(f"state: must be one of {', '.join(STATES)}")
        mask |= B_STATE
        vals.append(c)
    flags = 0
    for i, bkey in enumerate(_BOOLS):
        v = g(bkey)
        if v is not None:
            if type(v) is not bool:
                raise SampleError(f"{bkey}: must be true or false")
            mask |= _BOOL_BITS[i]
            if v:
                flags |= 1 << i
    if mask & 0x3C0:
        vals.append(flags)
    scalar = _SCALARS.get(mask)
    if scalar is None:
        scalar = _scalar_struct(mask)
    parts = [scalar.pack(*vals)]

    cmin = cmax = tmax = tmin = None
    cells = g("cells_mv")
    if cells is not None:
        mask |= B_CELLS
        packed, cmin, cmax = _pack_cells(cells)
        parts.append(packed)
    temps = g("temps_c")
    if temps is not None:
        mask |= B_TEMPS
        packed, tmin, tmax = _pack_temps(temps)
        parts.append(packed)
    bal = g("balancing")
    if bal is not None:
        if type(bal) is not list or len(bal) > 255:
            raise SampleError("balancing: must be a list of cell numbers")
        if bal:
            if not (_INT_ONLY.issuperset(map(type, bal)) and min(bal) >= 1 and max(bal) <= 255):
                for i, c in enumerate(bal):
                    if type(c) is not int or c < 1 or c > 255:
                        raise SampleError(f"balancing.{i}: must be a cell number 1 to 255")
            parts.append(bytes((len(bal), *bal)))
        else:
            parts.append(b"\x00")
        mask |= B_BAL
    faults = g("faults")
    if faults is not None:
        if type(faults) is not list:
            raise SampleError("faults: must be a list of fault names")
        if faults:
            for i, f in enumerate(faults):
                if type(f) is not str or not f or "," in f:
                    raise SampleError(f"faults.{i}: must be a fault name")
            raw = ",".join(faults).encode()
            if len(raw) > 255:
                raise SampleError("faults: too long")
            parts.append(_U8.pack(len(raw)) + raw)
        else:
            parts.append(b"\x00")
        mask |= B_FAULTS
    if g("fault_code") is not None:
        mask |= B_FCODE
        parts.append(_U8.pack(_int(d, "fault_code", 0, 255)))
    errors = g("errors")
    if errors is not None:
        if type(errors) is not dict or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in errors.items()
        ):
            raise SampleError("errors: must be an object of strings")
        raw = orjson.dumps(errors)
        if len(raw) > 4096:
            raise SampleError("errors: too long")
        mask |= B_ERRORS
        parts.append(_U16.pack(len(raw)) + raw)
    # the figures the history view aggregates, as a decoded row gives them (stored resolution)
    stats = series_point(
        volt / 1000 if volt is not None else None,
        curr / 1000 if curr is not None else None,
        soc / 100 if soc is not None else None,
        cmin,
        cmax,
        tmin,
        tmax,
    )
    return bid, seq, ts_ms, _HDR.pack(mask, sv) + b"".join(parts), stats


class PackedSample(NamedTuple):
    """A wire sample that passed validation, packed for storage."""

    index: int  # its place in the batch (for the reply)
    battery_id: str
    seq: int
    ts_ms: int
    data: bytes
    wire: dict[str, Any]  # the sample as received (the same dict, not a copy)
    series: Stats


def validate_batch(
    raw: list[Any], now_ms: int | None = None, max_future_ms: int = MAX_FUTURE_SKEW_MS
) -> tuple[list[PackedSample], list[dict[str, Any]]]:
    """:func:`validate_and_pack` over a batch: the samples that pass (in batch order) and the rejected ones
    (``{"index", "error"}``, by index). The same bytes, figures and errors as sample by sample, faster:
    samples with the same keys are checked and packed column by column (:func:`_pack_columns`); a column
    with anything unusual in it sends its samples through :func:`validate_and_pack` one by one."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    n = len(raw)
    out: list[PackedSample | None] = [None] * n
    groups: dict[tuple[str, ...], list[int]] = {}
    if n > 1 and set(map(type, raw)) == _DICT_TYPES:
        # what a gateway sends: one shape throughout. As many keys in each as in the first, and each has
        # the first's keys (_pack_columns' itemgetter raises KeyError otherwise): the same keys
        keys = tuple(raw[0])
        if set(map(len, raw)) == {len(keys)}:
            packed = _pack_columns(keys, raw, range(n), now_ms, max_future_ms)
            if packed is not None:
                return packed, []
    slow = _group(raw, groups)
    for keys, idx in groups.items():
        rows = (
            _pack_columns(keys, [raw[i] for i in idx], idx, now_ms, max_future_ms) if len(idx) > 1 else None
        )
        if rows is None:
            slow += idx
            continue
        for p in rows:
            out[p[0]] = p
    rejected: list[dict[str, Any]] = []
    for i in sorted(slow):
        try:
            bid, seq, ts_ms, data, stats = validate_and_pack(raw[i], now_ms, max_future_ms)
        except SampleError as e:
            rejected.append({"index": i, "error": str(e)})
            continue
        out[i] = PackedSample(i, bid, seq, ts_ms, data, raw[i], stats)
    return [p for p in out if p is not None], rejected


def _group(raw: list[Any], groups: dict[tuple[str, ...], list[int]]) -> list[int]:
    """Fill ``groups`` with the positions of the samples of each shape (their keys in order); returns the
    positions of what is not an object."""
    slow: list[int] = []
    for i, d in enumerate(raw):
        if type(d) is dict:
            k = tuple(d)
            g = groups.get(k)
            if g is None:
                groups[k] = [i]
            else:
                g.append(i)
        else:
            slow.append(i)
    return slow


_INT_TYPES = {int}
_STR_TYPES = {str}
_LIST_TYPES = {list}
_DICT_TYPES = {dict}
_NUM_SCALARS = (  # key, presence bit, scale, lowest and highest stored value, stored type
    ("voltage_v", B_VOLT, 1000, 0, 4294967295, "<u4"),
    ("current_a", B_CURR, 1000, -2147483648, 2147483647, "<i4"),
    ("soc_pct", B_SOC, 100, 0, 65535, "<u2"),
    ("remaining_ah", B_REM, 1000, 0, 4294967295, "<u4"),
)
_NONE = itertools.repeat(None)
#: PackedSample from a ready tuple without its Python-level __new__ (once per sample)
_new_tuple = tuple.__new__
_PACKED = itertools.repeat(PackedSample)


_LIST_FIELD_BITS = (
    ("cells_mv", B_CELLS),
    ("temps_c", B_TEMPS),
    ("balancing", B_BAL),
    ("faults", B_FAULTS),
    ("fault_code", B_FCODE),
)


def _cells_bytes(cells: list[int], lo: int, hi: int) -> bytes:
    """Checked cells (1 to 255 values in 0..65535) packed as :func:`_pack_cells` does."""
    n = len(cells)
    first = cells[0]
    if hi - first <= 127 and first - lo <= 128:
        st = _CELLS_COMPACT.get(n) or _cached(_CELLS_COMPACT, n, f"<BBH{n - 1}b")
        return st.pack(n, 0, first, *[c - first for c in cells[1:]])
    st = _CELLS_RAW.get(n) or _cached(_CELLS_RAW, n, f"<BB{n}H")
    return st.pack(n, 1, *cells)


def _temps_struct(n: int) -> struct.Struct:
    return _TEMPS.get(n) or _cached(_TEMPS, n, f"<B{n}h")


def _balancing_bytes(bal: Any) -> bytes:
    """ValueError (then sample by sample) unless a list of at most 255 cell numbers 1 to 255."""
    if type(bal) is not list:
        raise TypeError
    if not bal:
        return b"\x00"
    if len(bal) > 255 or not _INT_ONLY.issuperset(map(type, bal)) or min(bal) < 1 or max(bal) > 255:
        raise ValueError
    return bytes((len(bal), *bal))


def _faults_bytes(faults: Any) -> bytes:
    if type(faults) is not list:
        raise TypeError
    if not faults:
        return b"\x00"
    if not all(type(f) is str and f and "," not in f for f in faults):
        raise ValueError
    raw = ",".join(faults).encode()
    if len(raw) > 255:
        raise ValueError
    return _U8.pack(len(raw)) + raw


def _rows(m: np.ndarray) -> list[bytes]:
    """Each row of a uint8 matrix as bytes."""
    buf = m.tobytes()
    w = m.shape[1]
    return [buf[i : i + w] for i in range(0, len(buf), w)]


def _le(a: np.ndarray, dtype: str) -> np.ndarray:
    """A column of checked integers as a uint8 matrix of their little-endian ``dtype`` bytes."""
    return a.astype(dtype).view(np.uint8).reshape(len(a), -1)


def _one_length(col: tuple[Any, ...]) -> int | None:
    """The length of every list of a column, or None unless all are lists of one length (1 to 255)."""
    if set(map(type, col)) != _LIST_TYPES:
        return None
    lengths = set(map(len, col))
    width = lengths.pop()
    return width if not lengths and 0 < width <= 255 else None


def _cells_matrix(
    cells: tuple[Any, ...],
) -> tuple[list[int], list[int], np.ndarray | list[bytes]] | None:
    """Cell lists of one length, packed as :func:`_pack_cells` packs each, as one matrix: (min, max,
    packed rows: a uint8 matrix, or bytes per sample when both modes occur). None unless lists of one
    length (1 to 255) of integers 0 to 65535 (then the caller looks closer); TypeError for a bool."""
    width = _one_length(cells)
    if width is None:
        return None
    try:  # struct converts in C and refuses what is not an int in 0..65535 (floats, null, strings, ...)
        raw = struct.pack(f"<{len(cells) * width}H", *itertools.chain.from_iterable(cells))
    except struct.error:
        return None
    a = np.frombuffer(raw, dtype="<u2").reshape(len(cells), width).astype(np.int64)
    # ... but takes a bool for 0 or 1: cells of at least 2 mV cannot hold one, so only a pack reading 0 or
    # 1 mV costs the check per value
    if a.min() < 2 and set(map(type, itertools.chain.from_iterable(cells))) != _INT_TYPES:
        raise TypeError
    lo, hi = a.min(axis=1), a.max(axis=1)
    if lo.min() < 0 or hi.max() > 65535:
        raise ValueError
    n = a.shape[1]
    first = a[:, 0]
    compact = (hi - first <= 127) & (first - lo <= 128)
    if not compact.all():
        if compact.any():  # a mix of both modes: sample by sample
            return lo.tolist(), hi.tolist(), list(map(_cells_bytes, cells, lo.tolist(), hi.tolist()))
        m = np.empty((a.shape[0], 2 + 2 * n), dtype=np.uint8)
        m[:, 0], m[:, 1] = n, 1
        m[:, 2:] = a.astype("<u2").view(np.uint8)
        return lo.tolist(), hi.tolist(), m
    m = np.empty((a.shape[0], 3 + n), dtype=np.uint8)
    m[:, 0], m[:, 1] = n, 0
    m[:, 2], m[:, 3] = first & 0xFF, first >> 8  # u16 little-endian
    m[:, 4:] = (a[:, 1:] - first[:, None]) & 0xFF  # i8 deltas, two's complement
    return lo.tolist(), hi.tolist(), m


def _temps_matrix(temps: tuple[Any, ...]) -> tuple[list[float], list[float], np.ndarray] | None:
    """Temperature lists of one length at 0.1 °C as :func:`_pack_temps` packs each: (min, max, packed
    rows as a uint8 matrix). ``np.rint`` rounds half to even on the same doubles as round(). None unless
    lists of one length (1 to 255) of numbers (then the caller looks closer); TypeError for a bool;
    ValueError when one is out of range."""
    width = _one_length(temps)
    if width is None:
        return None
    try:  # struct converts ints and floats to doubles in C, and refuses null, strings, lists, ...
        raw = struct.pack(f"<{len(temps) * width}d", *itertools.chain.from_iterable(temps))
    except (struct.error, OverflowError):
        return None
    t = np.frombuffer(raw, dtype="<f8").reshape(len(temps), width)
    # ... but takes a bool as 0.0 or 1.0: only a 0 or a 1 among them costs the check per value
    if ((t == 0) | (t == 1)).any() and not _NUMBER.issuperset(
        map(type, itertools.chain.from_iterable(temps))
    ):
        raise TypeError
    if not np.isfinite(t).all():
        raise ValueError
    s = np.rint(t * 10)
    lo, hi = s.min(axis=1), s.max(axis=1)
    if lo.min() < -32768 or hi.max() > 32767:
        raise ValueError
    m = np.empty((t.shape[0], 1 + 2 * t.shape[1]), dtype=np.uint8)
    m[:, 0] = t.shape[1]
    m[:, 1:] = s.astype("<i2").view(np.uint8)
    # + 0.0: round() gives int 0 for -0.04, whose / 10 is 0.0; rint gives -0.0
    return (lo / 10 + 0.0).tolist(), (hi / 10 + 0.0).tolist(), m


def _list_lengths(col: tuple[Any, ...]) -> tuple[int, int]:
    """The shortest and longest list of a column; TypeError / ValueError unless lists of 1 to 255 values
    (an empty list packs differently: sample by sample)."""
    if set(map(type, col)) != _LIST_TYPES:
        raise TypeError
    shortest, longest = min(map(len, col)), max(map(len, col))
    if not 0 < shortest <= longest <= 255:
        raise ValueError
    return shortest, longest


def _codes(col: tuple[Any, ...], codes: dict[str, int]) -> list[int]:
    """Each value's code; KeyError / TypeError (then the caller goes sample by sample) for anything else."""
    if set(map(type, col)) != _STR_TYPES:
        raise TypeError
    return list(map(codes.__getitem__, col))


#: cached per set of fields present (at most 16 each), not per key order: a client choosing its key orders
#: must not grow them
_SCALAR_KINDS: dict[tuple[str, ...], Any] = {}
_BOOL_KINDS: dict[tuple[str, ...], Any] = {}
_SCALAR_NAMES = tuple(r[0] for r in _NUM_SCALARS)


def _scalar_kinds(keys: tuple[str, ...]) -> Any:
    """For samples with these keys: the numeric scalars they carry (names, presence bits, and per
    name as column vectors: scale, lowest and highest stored value; stored types), or None."""
    present = tuple(k for k in _SCALAR_NAMES if k in keys)
    if not present:
        return None
    got = _SCALAR_KINDS.get(present)
    if got is None:
        rows = [r for r in _NUM_SCALARS if r[0] in present]
        got = _SCALAR_KINDS[present] = (
            present,
            sum(r[1] for r in rows),
            np.array([[r[2]] for r in rows], dtype=np.float64),
            np.array([r[3] for r in rows], dtype=np.float64),
            np.array([r[4] for r in rows], dtype=np.float64),
            tuple(r[5] for r in rows),
        )
    return got


def _bool_kinds(keys: tuple[str, ...]) -> Any:
    """For samples with these keys: the booleans they carry (names, presence bits, flag shifts), or None."""
    present = tuple(k for k in _BOOLS if k in keys)
    if not present:
        return None
    got = _BOOL_KINDS.get(present)
    if got is None:
        here = [_BOOLS.index(k) for k in present]
        got = _BOOL_KINDS[present] = (
            present,
            sum(_BOOL_BITS[i] for i in here),
            np.array([[i] for i in here], dtype=np.uint8),
        )
    return got


def _power_w(volt: np.ndarray, curr: np.ndarray) -> list[float]:
    """``round(v * c, 3)`` (:func:`~trackingbms.analytics.cells.pack_power_w`) of each pair. round() to 3
    places is the double nearest the decimal rounding of the exact product (the product v * c is the same
    double here); rint(p * 1000) / 1000 finds the same unless p * 1000's own rounding (under 10^-3 below
    2^40) crosses a half: products within 10^-3 of one (a few per batch of 3-decimal figures) and huge
    ones take round() itself. The same reasoning as store/history.py's round_array (which imports this
    module)."""
    p = volt * curr
    y = p * 1000.0
    k = np.rint(y)
    if np.abs(y).max() >= 2.0**40:
        return [round(v * c, 3) for v, c in zip(volt.tolist(), curr.tolist(), strict=True)]
    out: list[float] = (k / 1000.0).tolist()
    for i in np.flatnonzero(np.abs(np.abs(y - k) - 0.5) < 1e-3).tolist():
        out[i] = round(float(volt[i]) * float(curr[i]), 3)
    return out


def _empty_lists(col: tuple[Any, ...]) -> bool:
    """Every value an empty list (packed as one zero byte: the usual balancing and faults)."""
    return set(map(type, col)) == _LIST_TYPES and not any(col)


# The one time format gateways send (format_ts: ``2026-11-24T10:00:00.000Z``) and the same with a UTC
# offset (``...000+02:00``), read a whole column at once: their characters as a uint8 matrix, checked
# and weighed with a few numpy operations instead of a datetime per sample.
_TS_SEP_POS = np.array([4, 7, 10, 13, 16, 19])
_TS_SEP = np.frombuffer(b"--T::.", dtype=np.uint8)
_TS_DIGIT_POS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22])
#: the largest digit each place may hold (month tens 1, day tens 3, hour tens 2, minute / second tens 5)
_TS_DIGIT_MAX = np.array([9, 9, 9, 9, 1, 9, 3, 9, 2, 9, 5, 9, 5, 9, 9, 9, 9], dtype=np.uint8)
#: digits → (YYYYMMDD, hour, minutes + seconds + milliseconds in ms); float64 matmul: exact below 2**53,
#: and several times faster than numpy's integer matmul
_TS_WEIGHTS = np.zeros((17, 3))
_TS_WEIGHTS[:8, 0] = [10**7, 10**6, 10**5, 10**4, 1000, 100, 10, 1]
_TS_WEIGHTS[8:10, 1] = [10, 1]
_TS_WEIGHTS[10:, 2] = [600_000, 60_000, 10_000, 1000, 100, 10, 1]
_OFFSET_DIGIT_POS = np.array([24, 25, 27, 28])
_OFFSET_DIGIT_MAX = np.array([2, 9, 5, 9], dtype=np.uint8)
_OFFSET_WEIGHTS = np.array([[10, 0], [1, 0], [0, 600_000], [0, 60_000]], dtype=np.float64)
_UNIX_DAY1 = 719_163  # date(1970, 1, 1).toordinal()


def _ts_column_ms(col: tuple[str, ...]) -> list[int] | None:
    """:func:`parse_ts_ms` of each string of a column, or None unless every one is written
    ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (or ``...mmm±HH:MM``) and is a valid time; then the caller parses them
    one by one (every other form :func:`parse_ts_ms` accepts, and the errors)."""
    width = len(col[0])
    if (width != 24 and width != 29) or set(map(len, col)) != {width}:  # one width: rows line up
        return None
    try:
        raw = "".join(col).encode("ascii")
    except UnicodeEncodeError:
        return None
    m = np.frombuffer(raw, dtype=np.uint8).reshape(len(col), width)
    if not (m[:, _TS_SEP_POS] == _TS_SEP).all():
        return None
    digits = m[:, _TS_DIGIT_POS] - np.uint8(48)  # a character below '0' wraps past 9
    if (digits > _TS_DIGIT_MAX).any():
        return None
    f = (digits @ _TS_WEIGHTS).astype(np.int64)
    if f[:, 1].max() > 23:
        return None
    ymd = f[:, 0]
    lo, hi = int(ymd.min()), int(ymd.max())
    try:  # datetime.date checks the month and the day of the month (leap years), once per distinct date
        if lo == hi:
            days: Any = date(lo // 10000, lo // 100 % 100, lo % 100).toordinal() - _UNIX_DAY1
        else:
            ymds, which = np.unique(ymd, return_inverse=True)
            ordinals = [date(v // 10000, v // 100 % 100, v % 100).toordinal() for v in ymds.tolist()]
            days = (np.array(ordinals, dtype=np.int64) - _UNIX_DAY1)[which]
    except ValueError:
        return None
    ms = days * 86_400_000 + f[:, 1] * 3_600_000 + f[:, 2]
    if width == 24:
        if not (m[:, 23] == 90).all():  # "Z"
            return None
        return _since_1970(ms)
    sign = m[:, 23]
    plus = sign == 43  # "+"
    if not (m[:, 26] == 58).all() or not (plus | (sign == 45)).all():  # ":", "-"
        return None
    digits = m[:, _OFFSET_DIGIT_POS] - np.uint8(48)
    if (digits > _OFFSET_DIGIT_MAX).any():
        return None
    o = (digits @ _OFFSET_WEIGHTS).astype(np.int64)
    if o[:, 0].max() > 23:  # datetime takes offsets under 24 h
        return None
    offset = o[:, 0] * 3_600_000 + o[:, 1]
    return _since_1970(ms - np.where(plus, offset, -offset))


def _since_1970(ms: np.ndarray) -> list[int] | None:
    """The times as ints, None before 1970: there parse_ts_ms's int(timestamp()) rounds toward zero, a
    second off what this computes (all are refused, before 2000, but with parse_ts_ms's figure)."""
    return ms.tolist() if ms.min() >= 0 else None


def _pack_columns(
    keys: tuple[str, ...], group: list[dict[str, Any]], idx: Any, now_ms: int, max_future_ms: int
) -> list[PackedSample] | None:
    """Samples that all carry exactly ``keys`` (None if one lacks a key), at batch positions ``idx``,
    validated and packed a column at a time: the type and range checks are set / min / max over a column (C
    loops), the values converted and laid out as one uint8 matrix (a row per sample) by numpy. All or
    nothing: None as soon as any value is not plainly valid (absent as None, errors, anything out of
    range); then :func:`validate_and_pack` decides, sample by sample, with its exact messages. What this
    accepts it packs exactly as :func:`validate_and_pack` does (tests/server/test_packing.py checks both
    ways on random batches)."""
    if not _KNOWN.issuperset(keys) or "errors" in keys:
        return None
    n = len(group)
    try:
        if len(keys) < 3:  # battery_id, seq, ts at least (and itemgetter(k) would not give tuples)
            return None
        cols = dict(zip(keys, zip(*map(operator.itemgetter(*keys), group), strict=True), strict=True))
        bids = cols["battery_id"]
        if not all(map(is_battery_id, set(bids))):
            return None
        seqs = cols["seq"]
        if set(map(type, seqs)) != _INT_TYPES or min(seqs) < 0 or max(seqs) > 2**63 - 1:
            return None
        ts_col = cols["ts"]
        if set(map(type, ts_col)) != _STR_TYPES:
            return None
        tss = _ts_column_ms(ts_col)
        if tss is None:  # another accepted form (or junk: SampleError, then sample by sample)
            parsed = {t: parse_ts_ms(t) for t in set(ts_col)}
            tss = list(map(parsed.__getitem__, ts_col))
        if min(tss) < MIN_TS_MS or max(tss) > now_ms + max_future_ms:
            return None

        # the row, left to right: mask and source|via (filled last), scalars, lists; a block is a uint8
        # matrix (fixed width) or bytes per sample (variable width)
        head = np.zeros((n, 3), dtype=np.uint8)
        blocks: list[np.ndarray | list[bytes]] = [head]
        mask = 0
        col = cols.get("source")
        if col is not None:
            head[:, 2] = _codes(col, _SOURCE_CODE)
        col = cols.get("via")
        if col is not None:
            head[:, 2] |= np.array(_codes(col, _VIA_CODE), dtype=np.uint8) << 4
        figures: dict[str, np.ndarray] = {}
        scalars = _scalar_kinds(keys)
        if scalars is not None:  # the measured numbers, all columns at once: a (columns, samples) matrix
            names, bits, scales, lows, highs, stored = scalars
            values = [cols[k] for k in names]
            if not _NUMBER.issuperset(map(type, itertools.chain.from_iterable(values))):
                return None
            # rint(v * scale) is round(v * scale) on the same double (ints: exact in range)
            doubles = struct.pack(f"<{len(names) * n}d", *itertools.chain.from_iterable(values))
            s = np.rint(np.frombuffer(doubles, dtype="<f8").reshape(len(names), n) * scales)
            if not np.isfinite(s).all() or (s.min(axis=1) < lows).any() or (s.max(axis=1) > highs).any():
                return None
            mask |= bits
            for k, key in enumerate(names):
                blocks.append(_le(s[k], stored[k]))
                if key != "remaining_ah":
                    # + 0.0: no -0.0 (round() gives int 0, whose / scale is 0.0)
                    figures[key] = s[k] / scales[k, 0] + 0.0
        col = cols.get("cycles")
        if col is not None:
            if set(map(type, col)) != _INT_TYPES or min(col) < 0 or max(col) > 65535:
                return None
            mask |= B_CYC
            blocks.append(_le(np.array(col), "<u2"))
        col = cols.get("state")
        if col is not None:
            mask |= B_STATE
            blocks.append(np.array(_codes(col, _STATE_CODE), dtype=np.uint8).reshape(n, 1))
        booleans = _bool_kinds(keys)
        if booleans is not None:  # the four booleans, one flags byte
            names, bits, shifts = booleans
            flags = np.array([cols[k] for k in names])  # bool only if every value is (not an int, None)
            if flags.dtype != np.bool_ or flags.ndim != 2:
                return None
            mask |= bits
            blocks.append(np.bitwise_or.reduce(flags.view(np.uint8) << shifts, axis=0).reshape(n, 1))

        cmins: Any = _NONE
        cmaxs: Any = _NONE
        cells = cols.get("cells_mv")
        if cells is not None:
            mask |= B_CELLS
            got = _cells_matrix(cells)  # the usual: one pack, one cell count
            if got is not None:
                cmins, cmaxs, packed = got
            else:
                _list_lengths(cells)
                if set(map(type, itertools.chain.from_iterable(cells))) != _INT_TYPES:
                    return None
                cmins = list(map(min, cells))
                cmaxs = list(map(max, cells))
                if min(cmins) < 0 or max(cmaxs) > 65535:
                    return None
                packed = list(map(_cells_bytes, cells, cmins, cmaxs))
            blocks.append(packed)
        tmins: Any = _NONE
        tmaxs: Any = _NONE
        temps = cols.get("temps_c")
        if temps is not None:
            mask |= B_TEMPS
            got = _temps_matrix(temps)
            if got is not None:
                tmins, tmaxs, packed = got
            else:
                _list_lengths(temps)
                if not _NUMBER.issuperset(map(type, itertools.chain.from_iterable(temps))):
                    return None
                scaled = [[round(t * 10) for t in ts] for ts in temps]
                lo = list(map(min, scaled))
                hi = list(map(max, scaled))
                if min(lo) < -32768 or max(hi) > 32767:
                    return None
                packed = [_temps_struct(len(s)).pack(len(s), *s) for s in scaled]
                tmins = [x / 10 for x in lo]
                tmaxs = [x / 10 for x in hi]
            blocks.append(packed)
        col = cols.get("balancing")
        if col is not None:
            mask |= B_BAL
            blocks.append(
                np.zeros((n, 1), np.uint8) if _empty_lists(col) else list(map(_balancing_bytes, col))
            )
        col = cols.get("faults")
        if col is not None:
            mask |= B_FAULTS
            blocks.append(np.zeros((n, 1), np.uint8) if _empty_lists(col) else list(map(_faults_bytes, col)))
        col = cols.get("fault_code")
        if col is not None:
            if set(map(type, col)) != _INT_TYPES or min(col) < 0 or max(col) > 255:
                return None
            mask |= B_FCODE
            blocks.append(np.array(col, dtype=np.uint8).reshape(n, 1))
    except (TypeError, ValueError, KeyError, OverflowError, struct.error):
        return None  # SampleError is a ValueError too: sample by sample, for its message
    head[:, 0], head[:, 1] = mask & 0xFF, mask >> 8
    datas = _join_blocks(blocks, n)
    volt = figures.get("voltage_v")
    curr = figures.get("current_a")
    powers: Any = _power_w(volt, curr) if volt is not None and curr is not None else _NONE
    volts = volt.tolist() if volt is not None else None
    currs = curr.tolist() if curr is not None else None
    socs = figures["soc_pct"].tolist() if "soc_pct" in figures else None
    deltas: Any = list(map(operator.sub, cmaxs, cmins)) if cells is not None else _NONE
    series = zip(
        volts or _NONE,
        currs or _NONE,
        socs or _NONE,
        powers,
        cmins,
        cmaxs,
        deltas,
        tmaxs,
        tmins,
        strict=False,  # the absent series are endless Nones
    )
    # one PackedSample per sample, built in C (tuple.__new__ over zipped columns)
    return list(map(_new_tuple, _PACKED, zip(idx, bids, seqs, tss, datas, group, series, strict=False)))


def _join_blocks(blocks: list[np.ndarray | list[bytes]], n: int) -> list[bytes]:
    """Each sample's packed row: the matrices side by side, cut into rows (one slice per sample); with a
    variable-width block in between, each sample's pieces joined."""
    if all(type(b) is np.ndarray for b in blocks):
        return _rows(np.concatenate(blocks, axis=1))  # type: ignore[arg-type]
    parts: list[list[bytes]] = []
    run: list[np.ndarray] = []
    for b in blocks:
        if type(b) is np.ndarray:
            run.append(b)
            continue
        if run:
            parts.append(_rows(np.concatenate(run, axis=1)))
            run = []
        parts.append(b)  # type: ignore[arg-type]
    if run:
        parts.append(_rows(np.concatenate(run, axis=1)))
    return list(map(b"".join, zip(*parts, strict=True)))


def ms_to_ts(ts_ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ts_ms / 1000, UTC))


def unpack(data: bytes) -> dict[str, Any]:
    """The measurement fields of a packed blob (those present), with wire names and units."""
    mask, sv = _HDR.unpack_from(data, 0)
    off = 3
    out: dict[str, Any] = {}
    if sv & 15:
        out["source"] = SOURCES[(sv & 15) - 1]
    if sv >> 4:
        out["via"] = VIAS[(sv >> 4) - 1]
    if mask & B_VOLT:
        out["voltage_v"] = _U32.unpack_from(data, off)[0] / 1000
        off += 4
    if mask & B_CURR:
        out["current_a"] = _I32.unpack_from(data, off)[0] / 1000
        off += 4
    if mask & B_SOC:
        out["soc_pct"] = _U16.unpack_from(data, off)[0] / 100
        off += 2
    if mask & B_REM:
        out["remaining_ah"] = _U32.unpack_from(data, off)[0] / 1000
        off += 4
    if mask & B_CYC:
        out["cycles"] = _U16.unpack_from(data, off)[0]
        off += 2
    if mask & B_STATE:
        out["state"] = STATES[data[off]]
        off += 1
    if mask & 0x3C0:
        flags = data[off]
        off += 1
        for i, key in enumerate(_BOOLS):
            if mask & _BOOL_BITS[i]:
                out[key] = bool(flags & (1 << i))
    if mask & B_CELLS:
        n, mode = data[off], data[off + 1]
        off += 2
        if n == 0:
            out["cells_mv"] = []
        elif mode == 0:
            first = _U16.unpack_from(data, off)[0]
            deltas = struct.unpack_from(f"<{n - 1}b", data, off + 2)
            out["cells_mv"] = [first, *(first + x for x in deltas)]
            off += 2 + n - 1
        else:
            out["cells_mv"] = list(struct.unpack_from(f"<{n}H", data, off))
            off += 2 * n
    if mask & B_TEMPS:
        n = data[off]
        out["temps_c"] = [x / 10 for x in struct.unpack_from(f"<{n}h", data, off + 1)]
        off += 1 + 2 * n
    if mask & B_BAL:
        n = data[off]
        out["balancing"] = list(data[off + 1 : off + 1 + n])
        off += 1 + n
    if mask & B_FAULTS:
        n = data[off]
        raw = bytes(data[off + 1 : off + 1 + n]).decode()
        out["faults"] = raw.split(",") if raw else []
        off += 1 + n
    if mask & B_FCODE:
        out["fault_code"] = data[off]
        off += 1
    if mask & B_ERRORS:
        n = _U16.unpack_from(data, off)[0]
        out["errors"] = orjson.loads(bytes(data[off + 2 : off + 2 + n]))
        off += 2 + n
    return out


def series_values(data: bytes) -> Stats:
    """The :data:`SERIES` values of a packed row (None where absent)."""
    return series_of(unpack(data))


def to_sample(battery_id: str, seq: int, ts_ms: int, data: bytes) -> dict[str, Any]:
    """A stored row as a wire Sample (absent fields left out)."""
    return {"battery_id": battery_id, "seq": seq, "ts": ms_to_ts(ts_ms), **unpack(data)}


# --- many rows at once -------------------------------------------------------------------------------------
# The alarm service reads back every stored segment (samples stored by any server process), so turning
# rows into wire dicts is on a hot path: a segment's rows nearly always share one layout, which makes each
# field a fixed column of a uint8 matrix. numpy pulls the columns out and ``tolist`` makes the Python
# values in C; only building the dicts is left per row. No library decodes this hand-made format
# column-wise.


class _Field(NamedTuple):
    """One output field of a layout: where it sits in the row and how to read it."""

    key: str
    kind: str  # "const", "scalar", "u16", "state", "bool", "cells0", "cells1", "temps", "u8list", "faults",
    # "u8", "errors"
    off: int  # byte offset of its value (after any count / mode bytes)
    n: int  # count (lists), byte length (faults, errors), bit (bool), 0 otherwise
    extra: Any  # the constant (const), (stored dtype, divisor) (scalar), else None


class _Layout(NamedTuple):
    """What a row's bytes say about where each field sits: equal ``check_pos`` bytes (and row length) mean
    equal layout, since each offset follows from the mask and the count bytes before it."""

    check_pos: np.ndarray  # positions of the layout-determining bytes (mask, source|via, counts, modes)
    check_val: np.ndarray  # their values in the prototype row
    fields: tuple[_Field, ...]


_SCALAR_LAYOUT = (  # key, bit, stored dtype, byte size, divisor (None: an int as stored)
    ("voltage_v", B_VOLT, "<u4", 4, 1000.0),
    ("current_a", B_CURR, "<i4", 4, 1000.0),
    ("soc_pct", B_SOC, "<u2", 2, 100.0),
    ("remaining_ah", B_REM, "<u4", 4, 1000.0),
    ("cycles", B_CYC, "<u2", 2, None),
)
#: fewer rows than this of one layout are left to :func:`unpack`: decoding a layout column-wise costs
#: some tens of µs however few its rows (numpy calls), about what unpack takes for a dozen 16S rows
_MIN_ROWS = 12
#: after this many layouts found with too few rows, the rest of the rows go through :func:`unpack` (a
#: segment of all-different layouts would otherwise cost a prototype and a comparison per row)
_MAX_MISSES = 8


def _layout(row: bytes) -> _Layout | None:
    """The layout of one packed row, read as :func:`unpack` reads it; None when :func:`unpack` must decide
    (a count reaching past the row, an unknown source / via / state code: it truncates or raises)."""
    if len(row) < 3:
        return None
    mask, sv = row[0] | row[1] << 8, row[2]
    pos = [0, 1, 2]
    fields: list[_Field] = []
    if sv & 15:
        if (sv & 15) > len(SOURCES):
            return None
        fields.append(_Field("source", "const", 0, 0, SOURCES[(sv & 15) - 1]))
    if sv >> 4:
        if (sv >> 4) > len(VIAS):
            return None
        fields.append(_Field("via", "const", 0, 0, VIAS[(sv >> 4) - 1]))
    off = 3
    for key, bit, dtype, size, divisor in _SCALAR_LAYOUT:
        if mask & bit:
            fields.append(_Field(key, "scalar" if divisor else "u16", off, 0, (dtype, divisor)))
            off += size
    if mask & B_STATE:
        fields.append(_Field("state", "state", off, 0, None))
        off += 1
    if mask & 0x3C0:
        for i, key in enumerate(_BOOLS):
            if mask & _BOOL_BITS[i]:
                fields.append(_Field(key, "bool", off, i, None))
        off += 1
    try:
        if mask & B_CELLS:
            n, mode = row[off], row[off + 1]
            pos += (off, off + 1)
            off += 2
            if n == 0 or mode == 0:
                fields.append(_Field("cells_mv", "cells0", off, n, None))
                off += 2 + n - 1 if n else 0
            else:
                fields.append(_Field("cells_mv", "cells1", off, n, None))
                off += 2 * n
        if mask & B_TEMPS:
            n = row[off]
            pos.append(off)
            fields.append(_Field("temps_c", "temps", off + 1, n, None))
            off += 1 + 2 * n
        if mask & B_BAL:
            n = row[off]
            pos.append(off)
            fields.append(_Field("balancing", "u8list", off + 1, n, None))
            off += 1 + n
        if mask & B_FAULTS:
            n = row[off]
            pos.append(off)
            fields.append(_Field("faults", "faults", off + 1, n, None))
            off += 1 + n
        if mask & B_FCODE:
            fields.append(_Field("fault_code", "u8", off, 0, None))
            off += 1
        if mask & B_ERRORS:
            n = row[off] | row[off + 1] << 8
            pos += (off, off + 1)
            fields.append(_Field("errors", "errors", off + 2, n, None))
            off += 2 + n
    except IndexError:
        return None
    if off > len(row):  # unpack would read a short slice (or fail): its business
        return None
    p = np.array(pos, dtype=np.intp)
    return _Layout(p, np.frombuffer(row, dtype=np.uint8)[p], tuple(fields))


_SIZE = {"<u2": 2, "<i4": 4, "<u4": 4}


def _column(m: np.ndarray, off: int, dtype: str) -> np.ndarray:
    """The little-endian ``dtype`` column starting at byte ``off`` of each row of a uint8 matrix."""
    size = _SIZE[dtype]
    return np.ascontiguousarray(m[:, off : off + size]).view(dtype)[:, 0]


def _rows_of(a: np.ndarray, divisor: float | None = None) -> list[list[Any]]:
    """``a.tolist()`` (ints), or ``(a / divisor).tolist()``: each row of an int64 matrix as a list. Cells
    and temperatures of a segment take few distinct values (a pack's cells within some tens of mV), so
    each distinct value is made into a Python object once and the rows share them (an object array's
    tolist copies references), instead of allocating an object per value: numbers are immutable, and
    allocating them was most of the cost."""
    lo, hi = int(a.min()), int(a.max())
    if hi - lo >= a.size // 2:  # mostly distinct values: no table worth its making
        return (a / divisor).tolist() if divisor else a.tolist()
    values = np.arange(lo, hi + 1, dtype=np.int64)
    table = np.empty(hi - lo + 1, dtype=object)
    # the same doubles as a / divisor gives: the same int64 values, the same division
    table[:] = (values / divisor).tolist() if divisor else values.tolist()
    return table[a - lo].tolist()  # type: ignore[no-any-return]


#: bytes a field of each fixed-width kind takes (the flags byte for a boolean)
_FIXED_SIZE = {"u16": 2, "state": 1, "bool": 1, "u8": 1}
_BITS = np.arange(4, dtype=np.uint8)[:, None]


def _decode_columns(m: np.ndarray, layout: _Layout) -> list[dict[str, Any]]:
    """The rows of ``m`` (every one of this layout) as :func:`unpack` gives them, a field at a time.
    Raises IndexError or ValueError where :func:`unpack` would raise (the caller then leaves the rows to
    it)."""
    k = m.shape[0]
    first = unpack(m[0].tobytes())
    if k == 1:
        return [first]
    # a field whose bytes are the same in every row has row 0's value in every row (fields often hold
    # still: source, via, cycles, state, flags, fault code): it goes into a template dict once
    still = (m == m[0]).all(axis=0).tolist()
    template: dict[str, Any] = {}
    varying: list[tuple[str, list[Any]]] = []
    float_keys: list[str] = []  # the varying scaled scalars, converted together
    float_cols: list[np.ndarray] = []
    divisors: list[float] = []
    flag_bits: list[list[bool]] | None = None
    for f in layout.fields:
        key, kind, off, n = f.key, f.kind, f.off, f.n
        size = _SIZE[f.extra[0]] if kind == "scalar" else _FIXED_SIZE.get(kind)
        if kind == "const" or (size is not None and all(still[off : off + size])):
            template[key] = first[key]  # immutable (str, float, int, bool): safe to share
            continue
        template[key] = None  # its place in the key order; every row's value is set below
        value: Any
        if kind == "scalar":
            float_keys.append(key)
            float_cols.append(_column(m, off, f.extra[0]))
            divisors.append(f.extra[1])
            continue
        if kind == "u16":
            value = _column(m, off, "<u2").tolist()
        elif kind == "state":
            value = list(map(STATES.__getitem__, m[:, off].tolist()))  # IndexError as unpack
        elif kind == "bool":
            if flag_bits is None:  # the four flag bits of every row, one list per bit
                flag_bits = ((m[:, off] >> _BITS) & 1).astype(bool).tolist()
            value = flag_bits[n]
        elif kind == "u8":
            value = m[:, off].tolist()
        # the lists: a fresh one per row, as unpack gives (a shared one would change in every row at once)
        elif kind == "cells0":
            if n == 0:
                value = m[:, off:off].tolist()
            else:
                cells = np.empty((k, n), dtype=np.int64)
                lead = _column(m, off, "<u2")
                cells[:, 0] = lead
                cells[:, 1:] = m[:, off + 2 : off + 1 + n].view(np.int8)  # deltas from the first
                cells[:, 1:] += lead[:, None]
                value = _rows_of(cells)
        elif kind == "cells1":
            value = _rows_of(np.ascontiguousarray(m[:, off : off + 2 * n]).view("<u2").astype(np.int64))
        elif kind == "temps":
            t = np.ascontiguousarray(m[:, off : off + 2 * n]).view("<i2")
            value = _rows_of(t.astype(np.int64), 10.0) if n else m[:, off:off].tolist()
        elif kind == "u8list":
            value = m[:, off : off + n].tolist()
        elif kind == "faults":
            if n == 0:
                value = m[:, off:off].tolist()
            else:
                raw = m[:, off : off + n].tobytes()
                value = [raw[i : i + n].decode().split(",") for i in range(0, k * n, n)]
        else:  # errors
            raw = m[:, off : off + n].tobytes()
            value = [orjson.loads(raw[i : i + n]) for i in range(0, k * n, n)]
        varying.append((key, value))
    if float_keys:
        # float64(int) / divisor: the int is exact in a double and IEEE division rounds correctly, as
        # Python's int / int does: the same double, bit for bit
        scaled = np.empty((len(float_keys), k), dtype=np.float64)
        for i, col in enumerate(float_cols):
            scaled[i] = col
        scaled /= np.array(divisors)[:, None]
        varying += zip(float_keys, scaled.tolist(), strict=True)
    # a copy of the template per row, then the varying fields set column by column: fewer Python-level
    # steps per row than building each dict from all its pairs (the keys exist already: order is kept)
    out = list(map(dict.copy, itertools.repeat(template, k)))
    for key, values in varying:
        for d, v in zip(out, values, strict=True):
            d[key] = v
    return out


def unpack_joined(buf: bytes, start: int, lens: np.ndarray) -> list[dict[str, Any]]:
    """:func:`unpack` of each of the rows lying back to back in ``buf`` from byte ``start`` (a segment's
    rows), ``lens`` (int64) bytes each. Rows are grouped by length and header (mask, source|via), then by
    layout: a prototype row's layout-determining bytes (:class:`_Layout`) are compared with every row of
    its group, and those that match all are decoded column-wise; a row no layout is proven for, or one of
    too few rows of its layout, goes through :func:`unpack`. A value :func:`unpack` refuses (a bad state
    code, faults that are not UTF-8, ...) makes the whole call :func:`unpack`'s, row by row: the same
    exception, from the same row."""
    n = len(lens)
    if n == 0:
        return []
    ends = np.cumsum(lens) + start
    starts = ends - lens
    try:
        return _unpack_rows(buf, start, lens, starts)
    except (IndexError, ValueError, struct.error):
        return [unpack(buf[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _groups(
    a: np.ndarray, start: int, lens: np.ndarray, starts: np.ndarray
) -> tuple[list[np.ndarray], list[int]]:
    """The rows' positions grouped by (length, the 3 header bytes), each group in row order; and the rows
    of groups too small to be worth decoding column-wise (a numpy pass per small group would cost more
    than :func:`unpack` of its rows)."""
    n = len(lens)
    width = int(lens[0])
    if n >= _MIN_ROWS and width >= 3 and (lens == width).all():  # the usual: one length, one header?
        m = a[start : start + n * width].reshape(n, width)
        if (m[:, :3] == m[0, :3]).all():
            return [np.arange(n)], []
    short = lens < 3  # no header: a group of their own (unpack refuses them)
    at = np.where(short, start, starts)
    header = a[at].astype(np.int64) | a[at + 1].astype(np.int64) << 8 | a[at + 2].astype(np.int64) << 16
    key = lens << 24 | np.where(short, -1, header)
    if key.min() == key.max():  # the usual: one kind of row throughout
        return ([np.arange(n)], []) if n >= _MIN_ROWS else ([], list(range(n)))
    order = np.argsort(key, kind="stable")
    cuts = np.flatnonzero(np.diff(key[order])) + 1
    bounds = np.concatenate(([0], cuts, [n]))
    sizes = np.diff(bounds)
    big = sizes >= _MIN_ROWS
    small = np.repeat(~big, sizes)  # per position of ``order``
    groups = [
        order[lo:hi] for lo, hi in zip(bounds[:-1][big].tolist(), bounds[1:][big].tolist(), strict=True)
    ]
    return groups, order[small].tolist()


def _unpack_rows(buf: bytes, start: int, lens: np.ndarray, starts: np.ndarray) -> list[dict[str, Any]]:
    """:func:`unpack_joined`'s work; raises on what it cannot decode."""
    n = len(lens)
    a = np.frombuffer(buf, dtype=np.uint8)
    out: list[dict[str, Any] | None] = [None] * n
    groups, singles = _groups(a, start, lens, starts)
    if singles:
        at, widths = starts.tolist(), lens.tolist()
        for i in singles:
            out[i] = unpack(buf[at[i] : at[i] + widths[i]])
    misses = 0  # layouts found with too few rows
    for idx in groups:
        width = int(lens[idx[0]])
        if misses >= _MAX_MISSES:
            for i, s in zip(idx.tolist(), starts[idx].tolist(), strict=True):
                out[i] = unpack(buf[s : s + width])
            continue
        if len(idx) == n:  # the rows lie back to back: already a matrix
            m = a[start : start + n * width].reshape(n, width)
        else:
            m = a[starts[idx][:, None] + np.arange(width)]
        rest = np.arange(len(idx))  # rows of m not decoded yet
        while rest.size:
            if rest.size < _MIN_ROWS or misses >= _MAX_MISSES:
                for r in rest.tolist():
                    out[int(idx[r])] = unpack(m[r].tobytes())
                break
            layout = _layout(m[rest[0]].tobytes())
            if layout is None:  # nothing proven about this row: unpack decides it
                out[int(idx[rest[0]])] = unpack(m[rest[0]].tobytes())
                rest = rest[1:]
                misses += 1
                continue
            sub = m if rest.size == len(idx) else m[rest]
            same = (sub[:, layout.check_pos] == layout.check_val).all(axis=1)
            rows = rest[same]
            if rows.size < _MIN_ROWS:
                dicts = [unpack(m[r].tobytes()) for r in rows.tolist()]
                misses += 1
            else:
                dicts = _decode_columns(sub if rows.size == rest.size else m[rows], layout)
            for i, d in zip(idx[rows].tolist(), dicts, strict=True):
                out[i] = d
            rest = rest[~same]
    return out  # type: ignore[return-value]


def unpack_many(datas: Sequence[bytes]) -> list[dict[str, Any]]:
    """``[unpack(d) for d in datas]`` (same keys, key order, types and float values), column-wise: several
    times faster on a segment's rows, which nearly always share one layout."""
    lens = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
    return unpack_joined(b"".join(datas), 0, lens)
