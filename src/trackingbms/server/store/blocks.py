"""Compressed history blocks: a stream's consecutive samples encoded column by column (sans-I/O, no SQL).

The hot path stores one packed row per sample (:mod:`trackingbms.server.store.packing`, ~57 B of data for
a 16S sample, 95-141 B on disk with the row and index overhead). Samples older than the hot window are
moved by the compaction task (:mod:`trackingbms.server.store.cold`) into *blocks*: one row per run of up to
:data:`BLOCK_MAX_SAMPLES` consecutive samples of one stream, its payload built here.

The layout follows the per-series columnar chunks of TimescaleDB compression and Gorilla (Pelkonen et al.,
VLDB 2015: timestamps as delta-of-delta), simplified for a general-purpose compressor behind it: instead of
bit-level encodings each column is a numpy integer array of the narrowest width its values fit (1, 2, 4 or
8 bytes), then the whole body goes through zlib (stdlib; zstandard would gain a few percent, not worth a
dependency). Hand-written because no library encodes this record shape (presence masks, ragged cell lists)
losslessly at our stored resolutions; numpy does the cumulative sums on decode.

Columns, in order (``n`` samples, ``k_f`` of them carrying field ``f``):

- ``ts_ms``: the first, then the first delta and the deltas of deltas (1 Hz polling: mostly 0 or ±jitter);
- ``seq``: the first, then deltas (mostly 1);
- presence mask (u16) and source / via byte per sample: nearly constant, zlib takes them to almost nothing;
- each scalar (voltage mV, current mA, SOC 0.01 %, remaining mAh, cycles, state code) over the samples that
  carry it, as deltas from the previous carrying sample: values at the stored resolution, so exact;
- the flags byte (the four booleans) of the samples carrying any of them;
- cells (mV): when every cell-carrying sample of the block has the same count ``N`` (the usual case), the
  per-sample integer mean as deltas, and each cell's difference from that mean as deltas over time: cells
  move together with the pack's current, so what remains is small. Otherwise (a count changed within the
  block) per sample its count and the cells as deltas from the previous cell;
- temperatures (0.1 °C): the same two shapes, without the mean;
- the rest of each packed row (balancing, faults, fault code, errors), bytes as packing wrote them, with
  their lengths: mostly empty lists, which zlib compresses to nothing.

Decoding rebuilds each sample's packed row byte for byte (same cell mode rule as packing), so everything
that reads raw rows (export, analytics) reads blocks through the same unpacking. History, which only needs
a few series per sample, takes them from the columns instead (:func:`decode_measures`: no row is rebuilt,
then unpacked again).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from trackingbms.server.store.packing import (
    B_CELLS,
    B_CURR,
    B_CYC,
    B_REM,
    B_SOC,
    B_STATE,
    B_TEMPS,
    B_VOLT,
)

#: samples per block at most: at 1 Hz about 34 minutes. Big enough that zlib finds the repetition and the
#: per-row overhead (key, index entry: ~60 B) is spread thin, small enough that reading a short range
#: decodes little (a block decodes in a few ms)
BLOCK_MAX_SAMPLES = 2048

#: the payload's format version (first byte), so a later layout can live beside this one
FORMAT_V1 = 1

_SCALAR_BITS = (B_VOLT, B_CURR, B_SOC, B_REM, B_CYC, B_STATE)
_SCALAR_CODES = ("I", "i", "H", "I", "H", "B")
_FLAG_BITS = 0x3C0
_DTYPES = (np.dtype("<i1"), np.dtype("<i2"), np.dtype("<i4"), np.dtype("<i8"))
_HDR = struct.Struct("<HB")
_U16 = struct.Struct("<H")


class BlockError(ValueError):
    """A payload that is not a block this module wrote (corrupt or from a newer version)."""


class Row(NamedTuple):
    """A stored sample as the hot table holds it."""

    seq: int
    ts_ms: int
    data: bytes


class _Parsed(NamedTuple):
    mask: int
    sv: int
    scalars: tuple[int, ...]  # in _SCALAR_BITS order, only those present
    flags: int | None
    cells: tuple[int, ...] | None
    temps: tuple[int, ...] | None  # 0.1 °C
    tail: bytes


def _parse(data: bytes) -> _Parsed:
    """A packed row (packing's layout) as integers at their stored resolution."""
    mask, sv = _HDR.unpack_from(data, 0)
    off = 3
    fmt = "<" + "".join(c for bit, c in zip(_SCALAR_BITS, _SCALAR_CODES, strict=True) if mask & bit)
    scalars = struct.unpack_from(fmt, data, off)
    off += struct.calcsize(fmt)
    flags = None
    if mask & _FLAG_BITS:
        flags = data[off]
        off += 1
    cells = temps = None
    if mask & B_CELLS:
        n, mode = data[off], data[off + 1]
        off += 2
        if n == 0:
            cells = ()
        elif mode == 0:
            first = _U16.unpack_from(data, off)[0]
            cells = (first, *(first + x for x in struct.unpack_from(f"<{n - 1}b", data, off + 2)))
            off += 1 + n
        else:
            cells = struct.unpack_from(f"<{n}H", data, off)
            off += 2 * n
    if mask & B_TEMPS:
        n = data[off]
        temps = struct.unpack_from(f"<{n}h", data, off + 1)
        off += 1 + 2 * n
    return _Parsed(mask, sv, scalars, flags, cells, temps, bytes(data[off:]))


def _pack_cells(cells: Sequence[int]) -> bytes:
    """Cells as packing writes them (the same mode rule, so rebuilt rows are byte-identical)."""
    n = len(cells)
    if n == 0:
        return b"\x00\x00"
    first = cells[0]
    if max(cells) - first <= 127 and first - min(cells) <= 128:
        return struct.pack(f"<BBH{n - 1}b", n, 0, first, *[c - first for c in cells[1:]])
    return struct.pack(f"<BB{n}H", n, 1, *cells)


# -- integer columns -----------------------------------------------------------------------------------


def _put(out: bytearray, values: np.ndarray | Sequence[int]) -> None:
    """An integer column in the narrowest signed width that holds it: width code byte, then the values."""
    a = np.asarray(values, dtype=np.int64)
    code = 0
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        for code, dt in enumerate(_DTYPES):  # noqa: B007 (the last code is the fallback)
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                break
    out.append(code)
    out += a.astype(_DTYPES[code]).tobytes()


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.off = 0

    def ints(self, count: int) -> np.ndarray:
        if self.off >= len(self.body):
            raise BlockError("block: truncated")
        code = self.body[self.off]
        if code >= len(_DTYPES):
            raise BlockError("block: bad column width")
        dt = _DTYPES[code]
        end = self.off + 1 + count * dt.itemsize
        if end > len(self.body):
            raise BlockError("block: truncated")
        a = np.frombuffer(self.body, dtype=dt, count=count, offset=self.off + 1).astype(np.int64)
        self.off = end
        return a

    def raw(self, size: int) -> bytes:
        end = self.off + size
        if end > len(self.body):
            raise BlockError("block: truncated")
        b = self.body[self.off : end]
        self.off = end
        return b


def _deltas(a: np.ndarray) -> np.ndarray:
    """First value, then differences (axis 0); the inverse is a cumulative sum."""
    if a.shape[0] == 0:
        return a
    return np.concatenate((a[:1], np.diff(a, axis=0)))


def _put_lists(out: bytearray, lists: list[tuple[int, ...]], with_mean: bool) -> None:
    """Ragged or rectangular lists of integers (cells, temperatures); see the module docstring."""
    counts = {len(x) for x in lists}
    if len(counts) <= 1:
        width = counts.pop() if counts else 0
        out.append(0)
        _put(out, [width])
        if not lists or width == 0:
            return
        m = np.array(lists, dtype=np.int64)
        if with_mean:
            mean = m.sum(axis=1) // width
            _put(out, _deltas(mean))
            m = m - mean[:, None]
        _put(out, _deltas(m).T.ravel())  # cell by cell over time: runs of small deltas
        return
    out.append(1)
    _put(out, [len(x) for x in lists])
    flat: list[int] = []
    for x in lists:
        if x:
            flat.append(x[0])
            flat.extend(x[i] - x[i - 1] for i in range(1, len(x)))
    _put(out, flat)


def _get_lists(r: _Reader, k: int, with_mean: bool) -> np.ndarray | list[tuple[int, ...]]:
    """What :func:`_put_lists` wrote: a k x N matrix (one count for all), else a list of tuples."""
    shape = r.raw(1)[0]
    if shape == 0:
        width = int(r.ints(1)[0])
        if k == 0 or width == 0:
            return np.zeros((k, 0), dtype=np.int64)
        mean = np.cumsum(r.ints(k)) if with_mean else None
        m = np.cumsum(r.ints(k * width).reshape(width, k).T, axis=0)
        if mean is not None:
            m = m + mean[:, None]
        return m
    if shape != 1:
        raise BlockError("block: bad list shape")
    counts = r.ints(k).tolist()
    flat = r.ints(sum(counts))
    out: list[tuple[int, ...]] = []
    pos = 0
    for c in counts:
        out.append(tuple(np.cumsum(flat[pos : pos + c]).tolist()) if c else ())
        pos += c
    return out


def _cells_segments(lists: np.ndarray | list[tuple[int, ...]]) -> list[bytes]:
    """Each sample's cells as packing writes them; a matrix is packed in numpy, row by row only at the end."""
    if isinstance(lists, list):
        return [_pack_cells(x) for x in lists]
    k, n = lists.shape
    if n == 0:
        return [b"\x00\x00"] * k
    first = lists[:, :1]
    d = lists[:, 1:] - first
    compact = (d.max(axis=1, initial=0) <= 127) & (d.min(axis=1, initial=0) >= -128)
    hdr = np.array([n, 0], dtype=np.uint8)
    mode0 = np.hstack(
        (
            np.broadcast_to(hdr, (k, 2)),
            first.astype("<u2", order="C").view(np.uint8),
            d.astype(np.int8, order="C").view(np.uint8),
        )
    )
    if compact.all():
        return [row.tobytes() for row in mode0]
    hdr[1] = 1
    mode1 = np.hstack((np.broadcast_to(hdr, (k, 2)), lists.astype("<u2", order="C").view(np.uint8)))
    return [(mode0[i] if compact[i] else mode1[i]).tobytes() for i in range(k)]


def _temps_segments(lists: np.ndarray | list[tuple[int, ...]]) -> list[bytes]:
    if isinstance(lists, list):
        return [struct.pack(f"<B{len(t)}h", len(t), *t) for t in lists]
    k, n = lists.shape
    rows = np.hstack((np.full((k, 1), n, dtype=np.uint8), lists.astype("<i2", order="C").view(np.uint8)))
    return [row.tobytes() for row in rows]


# -- blocks --------------------------------------------------------------------------------------------


def encode(rows: Iterable[Row | tuple[int, int, bytes]]) -> bytes:
    """One block from a stream's samples ``(seq, ts_ms, data)``, in ts order (sorted here if not)."""
    items = sorted(rows, key=lambda r: r[1])
    if not items:
        raise ValueError("a block holds at least one sample")
    parsed = [_parse(d) for _, _, d in items]
    out = bytearray()
    _put(out, [len(items)])
    ts = np.array([r[1] for r in items], dtype=np.int64)
    _put(out, [int(ts[0])])
    _put(out, _deltas(np.diff(ts)))  # first delta, then deltas of deltas
    seq = np.array([r[0] for r in items], dtype=np.int64)
    _put(out, _deltas(seq))
    _put(out, [p.mask for p in parsed])
    _put(out, [p.sv for p in parsed])
    for j, bit in enumerate(_SCALAR_BITS):
        col = []
        for p in parsed:
            if p.mask & bit:
                # position of this scalar among the row's present ones
                col.append(p.scalars[sum(1 for b in _SCALAR_BITS[:j] if p.mask & b)])
        _put(out, _deltas(np.array(col, dtype=np.int64)))
    _put(out, [p.flags for p in parsed if p.flags is not None])
    _put_lists(out, [p.cells for p in parsed if p.cells is not None], with_mean=True)
    _put_lists(out, [p.temps for p in parsed if p.temps is not None], with_mean=False)
    tails = [p.tail for p in parsed]
    _put(out, [len(t) for t in tails])
    out += b"".join(tails)
    return bytes((FORMAT_V1,)) + zlib.compress(bytes(out), 9)


class _Columns(NamedTuple):
    """A block's columns as stored, before any per-sample row is rebuilt."""

    n: int
    ts: list[int]
    seqs: list[int]
    masks: np.ndarray  # int64, one per sample
    svs: list[int]
    scalars: list[np.ndarray]  # per _SCALAR_BITS, over the samples carrying it
    flags: list[int]
    cells: np.ndarray | list[tuple[int, ...]]  # over the samples carrying cells (see _get_lists)
    temps: np.ndarray | list[tuple[int, ...]]
    tail_lens: list[int]
    body: bytes
    tail_off: int


def _read_columns(payload: bytes) -> _Columns:
    if not payload or payload[0] != FORMAT_V1:
        raise BlockError("block: unknown format version")
    try:
        body = zlib.decompress(payload[1:])
    except zlib.error as e:
        raise BlockError(f"block: {e}") from None
    r = _Reader(body)
    n = int(r.ints(1)[0])
    ts0 = int(r.ints(1)[0])
    ts = [ts0, *(ts0 + np.cumsum(np.cumsum(r.ints(n - 1)))).tolist()]
    seqs = np.cumsum(r.ints(n)).tolist()
    masks = r.ints(n)
    svs = r.ints(n).tolist()
    scalars = [np.cumsum(r.ints(int(np.count_nonzero(masks & bit)))) for bit in _SCALAR_BITS]
    flags = r.ints(int(np.count_nonzero(masks & _FLAG_BITS))).tolist()
    cells = _get_lists(r, int(np.count_nonzero(masks & B_CELLS)), with_mean=True)
    temps = _get_lists(r, int(np.count_nonzero(masks & B_TEMPS)), with_mean=False)
    tail_lens = r.ints(n).tolist()
    if r.off + sum(tail_lens) != len(body):
        raise BlockError("block: length mismatch")
    return _Columns(n, ts, seqs, masks, svs, scalars, flags, cells, temps, tail_lens, body, r.off)


def decode(payload: bytes) -> list[Row]:
    """The samples of a block, in ts order, each with its packed row exactly as it was stored."""
    cols = _read_columns(payload)
    n, ts, seqs, svs, tail_lens, body = cols.n, cols.ts, cols.seqs, cols.svs, cols.tail_lens, cols.body
    masks = cols.masks.tolist()
    nexts = [iter(col.tolist()).__next__ for col in cols.scalars]
    next_flag = iter(cols.flags).__next__
    next_cells = iter(_cells_segments(cols.cells)).__next__
    next_temps = iter(_temps_segments(cols.temps)).__next__
    toff = cols.tail_off
    out: list[Row] = []
    # per presence mask: its struct and which scalar columns it takes, in order
    plans: dict[int, tuple[struct.Struct, tuple[Any, ...], bool, bool]] = {}
    for i in range(n):
        mask = masks[i]
        plan = plans.get(mask)
        if plan is None:
            codes = "".join(c for bit, c in zip(_SCALAR_BITS, _SCALAR_CODES, strict=True) if mask & bit)
            has_flags = bool(mask & _FLAG_BITS)
            plan = plans[mask] = (
                struct.Struct("<HB" + codes + ("B" if has_flags else "")),
                tuple(nexts[j] for j, bit in enumerate(_SCALAR_BITS) if mask & bit)
                + ((next_flag,) if has_flags else ()),
                bool(mask & B_CELLS),
                bool(mask & B_TEMPS),
            )
        st, takes, has_cells, has_temps = plan
        head = st.pack(mask, svs[i], *[f() for f in takes])
        tl = tail_lens[i]
        data = (
            head
            + (next_cells() if has_cells else b"")
            + (next_temps() if has_temps else b"")
            + body[toff : toff + tl]
        )
        toff += tl
        out.append(Row(seqs[i], ts[i], data))
    return out


# -- history series, straight from the columns -------------------------------------------------------------

#: the measurements history's series are made of, as the columns of :func:`decode_measures`' matrix
#: (power and the cell delta follow from them: store/history.py)
MEASURES = ("voltage_v", "current_a", "soc_pct", "cell_min_mv", "cell_max_mv", "temp_min_c", "temp_max_c")
#: stored integer -> wire unit of the first three (packing.unpack's divisions, the same IEEE ones)
_MEASURE_SCALARS = ((0, 1000), (1, 1000), (2, 100))


def _extremes(lists: np.ndarray | list[tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample the min and max of its list (cells or temperatures); NaN for an empty list."""
    if isinstance(lists, list):
        lo = np.array([min(x) if x else np.nan for x in lists], dtype=float)
        hi = np.array([max(x) if x else np.nan for x in lists], dtype=float)
        return lo, hi
    if lists.shape[1] == 0:
        empty = np.full(lists.shape[0], np.nan)
        return empty, empty
    return lists.min(axis=1).astype(float), lists.max(axis=1).astype(float)


def _measures(
    masks: np.ndarray,
    scalars: Sequence[np.ndarray],
    cells: np.ndarray | list[tuple[int, ...]],
    temps: np.ndarray | list[tuple[int, ...]],
) -> np.ndarray:
    """The n x len(MEASURES) matrix (float, NaN where a sample lacks the field) from the stored columns.

    The values equal what ``packing.unpack`` and ``analytics.cells.series_of`` give for each sample: the
    same divisions of the same integers; a temperature's min / max is taken before the division by 10,
    which is monotonic (correctly rounded), so it picks the same value."""
    out = np.full((len(masks), len(MEASURES)), np.nan)
    for col, div in _MEASURE_SCALARS:
        out[(masks & _SCALAR_BITS[col]) != 0, col] = scalars[col] / div
    has = (masks & B_CELLS) != 0
    out[has, 3], out[has, 4] = _extremes(cells)
    has = (masks & B_TEMPS) != 0
    lo, hi = _extremes(temps)
    out[has, 5], out[has, 6] = lo / 10, hi / 10
    return out


def decode_measures(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A block's timestamps (int64) and :data:`MEASURES` matrix, without rebuilding any packed row: what
    a history read needs (measured against decode plus unpacking per sample: docs/architecture.md)."""
    cols = _read_columns(payload)
    return np.array(cols.ts, dtype=np.int64), _measures(cols.masks, cols.scalars, cols.cells, cols.temps)


def rows_measures(datas: Sequence[bytes]) -> np.ndarray:
    """The :data:`MEASURES` matrix of packed rows (the hot ones, not yet in a block)."""
    parsed = [_parse(d) for d in datas]
    masks = np.array([p.mask for p in parsed], dtype=np.int64)
    scalars = []
    for j, bit in enumerate(_SCALAR_BITS[:3]):
        col = [p.scalars[sum(1 for b in _SCALAR_BITS[:j] if p.mask & b)] for p in parsed if p.mask & bit]
        scalars.append(np.array(col, dtype=np.int64))
    cells = [p.cells for p in parsed if p.cells is not None]
    temps = [p.temps for p in parsed if p.temps is not None]
    return _measures(masks, scalars, cells, temps)
