"""The one series accumulator: count, min, max and sum of each history series (the rollup row layout).

Ingest folds samples into 1-minute rollups with it (and minutes into 1-hour rollups), history folds raw rows
into buckets with it, and rollup rows aggregated in SQL come back as one. Flat list, not objects per series:
it is on the ingest hot path.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from trackingbms.analytics.cells import SERIES

_N_SERIES = len(SERIES)


class SeriesStats(NamedTuple):
    n: int
    min: Any
    max: Any
    sum: float


class SeriesAcc:
    """Per series of :data:`~trackingbms.analytics.cells.SERIES`: n, min, max, sum (None / 0 while empty)."""

    __slots__ = ("flat",)

    def __init__(self, flat: list[Any] | None = None) -> None:
        #: [n, min, max, sum] per series, series after series
        self.flat: list[Any] = flat if flat is not None else [0, None, None, 0.0] * _N_SERIES

    @classmethod
    def from_columns(cls, columns: Iterable[Any]) -> SeriesAcc:
        """From n, min, max, sum columns in :data:`SERIES` order (e.g. a rollup aggregate row)."""
        return cls(list(columns))

    def add(self, point: Sequence[Any]) -> None:
        """Fold one sample's series values (None where absent)."""
        acc = self.flat
        for j, v in enumerate(point):
            if v is None:
                continue
            o = 4 * j
            if not acc[o]:
                acc[o], acc[o + 1], acc[o + 2], acc[o + 3] = 1, v, v, v
            else:
                acc[o] += 1
                if v < acc[o + 1]:
                    acc[o + 1] = v
                if v > acc[o + 2]:
                    acc[o + 2] = v
                acc[o + 3] += v

    @classmethod
    def of_points(cls, points: Sequence[Sequence[Any]]) -> SeriesAcc:
        """A new accumulator of these samples' series values: what :meth:`add` of each in turn gives (the
        sums added in the same order, so bit for bit), with one min / max / sum per series instead of a
        Python step per value (the ingest hot path folds ~100 samples per minute row this way)."""
        flat: list[Any] = []
        for col in zip(*points, strict=True):
            if None in col:
                col = [v for v in col if v is not None]  # partial samples: absent ones skipped
                if not col:
                    flat += (0, None, None, 0.0)
                    continue
            # reduce, not sum(): the same additions in the same order (3.12's sum() compensates)
            flat += (len(col), min(col), max(col), functools.reduce(operator.add, col))
        return cls(flat) if flat else cls()

    def merge(self, other: SeriesAcc) -> None:
        """Fold another accumulator in (a minute into its hour)."""
        acc, src = self.flat, other.flat
        for o in range(0, 4 * _N_SERIES, 4):
            n = src[o]
            if not n:
                continue
            if not acc[o]:
                acc[o], acc[o + 1], acc[o + 2], acc[o + 3] = n, src[o + 1], src[o + 2], src[o + 3]
            else:
                acc[o] += n
                if src[o + 1] < acc[o + 1]:
                    acc[o + 1] = src[o + 1]
                if src[o + 2] > acc[o + 2]:
                    acc[o + 2] = src[o + 2]
                acc[o + 3] += src[o + 3]

    def stats(self, j: int) -> SeriesStats:
        o = 4 * j
        n, lo, hi, total = self.flat[o : o + 4]
        return SeriesStats(n or 0, lo, hi, total)

    def items(self) -> Iterable[tuple[str, SeriesStats]]:
        for j, name in enumerate(SERIES):
            yield name, self.stats(j)
