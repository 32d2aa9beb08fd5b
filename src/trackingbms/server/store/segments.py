"""Hot segments: the ``sample_segments`` table holds one row per (stream, batch) instead of one per sample.

Why hand-written: a row per sample cost the database two b-tree inserts (SQLite) or a heap row, two index
entries and their WAL (PostgreSQL) per sample, most of the server's ingest CPU. A segment is the samples of
one stream from one batch, in ts order, with their keys as plain arrays so that the rare re-send is checked
with numpy on the few segments it overlaps, never row by row in SQL:

    u32 n | n × i64 seq | n × i64 ts_ms | n × u32 len | the n packed rows (store/packing.py), concatenated

Little-endian, no compression: encoding is a few ``tobytes`` and one ``join`` (the block encoder of
store/blocks.py parses every row in Python: far too slow on the ingest path; compaction still uses it).
A segment spans less than :data:`SEGMENT_MAX_SPAN_MS`, so that the segments of a time range are found by
``ts_min`` alone (an index range), as blocks are. Who writes, reads and compacts them: store/ingest.py,
store/cold.py, store/retention.py; the dedup rules are in store/ingest.py.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from trackingbms.server.store.packing import unpack_joined

#: a segment spans less than this (ms): a batch spanning more (a long backfill) is cut into several
SEGMENT_MAX_SPAN_MS = 86_400_000

_N = struct.Struct("<I")


class SegmentRow(NamedTuple):
    """One sample held in a segment."""

    seq: int
    ts_ms: int
    data: bytes


class NewSegment(NamedTuple):
    """A segment to insert: its key ranges, count and payload."""

    seq_min: int
    seq_max: int
    ts_min: int
    ts_max: int
    n: int
    data: bytes


def encode(seqs: np.ndarray, tss: np.ndarray, datas: Sequence[bytes]) -> bytes:
    """The payload of samples already in ts order (``seqs`` / ``tss`` int64 arrays, ``datas`` packed rows)."""
    n = len(datas)
    lens = np.fromiter(map(len, datas), dtype="<u4", count=n)
    return b"".join(
        (
            _N.pack(n),
            seqs.astype("<i8", copy=False).tobytes(),
            tss.astype("<i8", copy=False).tobytes(),
            lens.tobytes(),
            *datas,
        )
    )


def keys(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(seq, ts_ms) int64 arrays of a payload, without touching its rows."""
    n = _N.unpack_from(payload)[0]
    seqs = np.frombuffer(payload, dtype="<i8", count=n, offset=4)
    tss = np.frombuffer(payload, dtype="<i8", count=n, offset=4 + 8 * n)
    return seqs, tss


def datas(payload: bytes) -> list[bytes]:
    """The packed rows of a payload, in its (ts) order."""
    n = _N.unpack_from(payload)[0]
    start = 4 + 16 * n
    lens = np.frombuffer(payload, dtype="<u4", count=n, offset=start)
    ends = (np.cumsum(lens, dtype=np.int64) + (start + 4 * n)).tolist()
    out: list[bytes] = []
    prev = start + 4 * n
    for end in ends:
        out.append(payload[prev:end])
        prev = end
    return out


def samples(payload: bytes) -> tuple[list[int], list[int], list[dict[str, Any]]]:
    """(seqs, ts_ms, wire dicts) of every sample of a payload, in ts order: the dicts are
    :func:`~trackingbms.server.store.packing.unpack` of each row, decoded column-wise from the payload
    itself (the rows lie back to back in it: no copy per row)."""
    seqs, tss = keys(payload)
    n = len(seqs)
    start = 4 + 16 * n
    lens = np.frombuffer(payload, dtype="<u4", count=n, offset=start).astype(np.int64)
    return seqs.tolist(), tss.tolist(), unpack_joined(payload, start + 4 * n, lens)


def decode(payload: bytes) -> list[SegmentRow]:
    """Every sample of a payload, in ts order."""
    seqs, tss = keys(payload)
    return [SegmentRow(*r) for r in zip(seqs.tolist(), tss.tolist(), datas(payload), strict=True)]


def build(seqs: np.ndarray, tss: np.ndarray, datas_: Sequence[bytes]) -> list[NewSegment]:
    """Segments holding these samples (any order): sorted by ts, cut so that each spans less than
    :data:`SEGMENT_MAX_SPAN_MS`."""
    if len(tss) == 0:
        return []
    if len(tss) > 1 and not bool(np.all(tss[1:] > tss[:-1])):
        order = np.argsort(tss, kind="stable")
        seqs, tss = seqs[order], tss[order]
        datas_ = [datas_[i] for i in order.tolist()]
    cuts = [0]
    if (
        int(tss[-1]) - int(tss[0]) >= SEGMENT_MAX_SPAN_MS
    ):  # rare: walk the run, cutting where it gets too long
        t0 = int(tss[0])
        for i, t in enumerate(tss.tolist()):
            if t - t0 >= SEGMENT_MAX_SPAN_MS:
                cuts.append(i)
                t0 = t
    cuts.append(len(tss))
    out: list[NewSegment] = []
    for a, b in itertools.pairwise(cuts):
        s, t = seqs[a:b], tss[a:b]
        out.append(
            NewSegment(int(s.min()), int(s.max()), int(t[0]), int(t[-1]), b - a, encode(s, t, datas_[a:b]))
        )
    return out


def build_rows(rows: Sequence[SegmentRow]) -> list[NewSegment]:
    """:func:`build` from decoded rows (compaction's and retention's leftovers)."""
    if not rows:
        return []
    seqs = np.fromiter((r.seq for r in rows), dtype=np.int64, count=len(rows))
    tss = np.fromiter((r.ts_ms for r in rows), dtype=np.int64, count=len(rows))
    return build(seqs, tss, [r.data for r in rows])
