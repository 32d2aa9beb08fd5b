"""Compressed history blocks: the encoding round-trips exactly (property test), partial samples included."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.server.test_packing import NOW_MS, samples

from trackingbms.server.store import blocks, packing


def _packed(d: dict[str, Any]) -> bytes:
    return packing.validate_and_pack(d, NOW_MS)[3]


@st.composite
def streams_of_rows(draw: st.DrawFn) -> list[blocks.Row]:
    """A stream's rows: random samples (partial ones included), distinct ts, seqs anywhere."""
    ds = draw(st.lists(samples, min_size=1, max_size=40))
    tss = draw(
        st.lists(st.integers(packing.MIN_TS_MS, NOW_MS), min_size=len(ds), max_size=len(ds), unique=True)
    )
    return [blocks.Row(d["seq"], ts, _packed(d)) for d, ts in zip(ds, tss, strict=True)]


@settings(max_examples=300, deadline=None)
@given(streams_of_rows())
def test_random_samples_round_trip_exactly(rows: list[blocks.Row]) -> None:
    out = blocks.decode(blocks.encode(rows))
    assert out == sorted(rows, key=lambda r: r.ts_ms)  # the packed rows byte for byte, seq and ts too


@st.composite
def series_rows(draw: st.DrawFn) -> list[blocks.Row]:
    """Realistic shape: 16 cells moving together, most polls without cells or temps."""
    n = draw(st.integers(1, 300))
    ts, seq, base = 1_790_000_000_000, draw(st.integers(0, 10**6)), 3300
    rows = []
    for i in range(n):
        ts += 1000 + draw(st.integers(-30, 30))
        base += draw(st.integers(-3, 3))
        d: dict[str, Any] = {"battery_id": "p", "seq": seq + i, "ts": packing.ms_to_ts(ts)}
        d["voltage_v"] = round(base * 16 / 1000, 3)
        d["current_a"] = draw(st.integers(-50_000, 50_000)) / 1000
        if i % 5 == 0:
            d["cells_mv"] = [
                base + draw(st.integers(-4, 4)) for _ in range(draw(st.sampled_from([16, 16, 16, 8])))
            ]
        if i % 10 == 0:
            d["temps_c"] = [25.0, draw(st.integers(200, 300)) / 10]
            d["faults"] = []
        rows.append(blocks.Row(d["seq"], ts, _packed(d)))
    return rows


@settings(max_examples=100, deadline=None)
@given(series_rows())
def test_realistic_series_round_trip(rows: list[blocks.Row]) -> None:
    assert blocks.decode(blocks.encode(rows)) == rows


def test_full_16s_samples_compress_far_below_the_hot_row() -> None:
    rows = []
    for i in range(2048):
        d = {
            "battery_id": "p",
            "seq": i,
            "ts": packing.ms_to_ts(1_790_000_000_000 + i * 1000),
            "source": "a5-uart",
            "via": "wifi",
            "voltage_v": 52.8,
            "current_a": -10 + (i % 7) * 0.01,
            "soc_pct": 80.0 - i * 0.01,
            "remaining_ah": 100.0,
            "cycles": 42,
            "state": "discharging",
            "charge_mos": True,
            "discharge_mos": True,
            "charger_connected": False,
            "load_connected": True,
            "cells_mv": [3300 + (i // 60) + (c * 3 + i) % 5 for c in range(16)],
            "temps_c": [25.0, 25.1, 24.9, 26.0],
            "balancing": [],
            "faults": [],
            "fault_code": 0,
        }
        rows.append(blocks.Row(i, 1_790_000_000_000 + i * 1000, _packed(d)))
    payload = blocks.encode(rows)
    assert blocks.decode(payload) == rows
    assert len(payload) / len(rows) < 15  # vs ~57 B of packed data per hot row


def test_a_corrupt_block_is_a_clear_error() -> None:
    good = blocks.encode(
        [
            blocks.Row(
                1,
                packing.MIN_TS_MS,
                _packed({"battery_id": "p", "seq": 1, "ts": packing.ms_to_ts(packing.MIN_TS_MS)}),
            )
        ]
    )
    with pytest.raises(blocks.BlockError, match="format version"):
        blocks.decode(b"\x09" + good[1:])
    with pytest.raises(blocks.BlockError):
        blocks.decode(good[:5])
    with pytest.raises(blocks.BlockError, match=r"truncated|mismatch"):
        blocks.decode(bytes((blocks.FORMAT_V1,)) + zlib.compress(zlib.decompress(good[1:])[:-1]))


def _measures_of(data: bytes) -> list[float]:
    """The MEASURES of a packed row through packing.unpack (the per-sample path history used before)."""
    d = packing.unpack(data)
    cells, temps = d.get("cells_mv"), d.get("temps_c")
    vals = [d.get("voltage_v"), d.get("current_a"), d.get("soc_pct")]
    vals += [min(cells), max(cells)] if cells else [None, None]
    vals += [min(temps), max(temps)] if temps else [None, None]
    return [float("nan") if v is None else float(v) for v in vals]


@settings(max_examples=300, deadline=None)
@given(st.one_of(streams_of_rows(), series_rows()))
def test_measures_from_the_columns_equal_the_unpacked_rows(rows: list[blocks.Row]) -> None:
    """decode_measures (block columns straight to history's inputs) and rows_measures (hot rows) give the
    values unpacking every sample gives, bit for bit, partial samples and changing cell counts included."""
    ordered = sorted(rows, key=lambda r: r.ts_ms)
    expected = np.array([_measures_of(r.data) for r in ordered])
    ts, got = blocks.decode_measures(blocks.encode(rows))
    assert ts.tolist() == [r.ts_ms for r in ordered]
    np.testing.assert_array_equal(got, expected)  # NaN where absent, equal values elsewhere
    np.testing.assert_array_equal(blocks.rows_measures([r.data for r in ordered]), expected)
