"""packing.unpack_many / segments.samples against the reference, packing.unpack row by row: random batches
packed by the real validate_batch / validate_and_pack, compared value by value with exact types and float
bits (a list for a tuple, 1 for 1.0 or True, -0.0 for 0.0, one ulp off, a key out of order: all fail)."""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackingbms.model import SOURCES, STATES, VIAS
from trackingbms.server.store import packing, segments

NOW_MS = 1_795_516_787_000


def assert_same(got: Any, want: Any, where: str = "") -> None:
    """Equal values of identical types, floats bit for bit, dict keys in the same order."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert struct.pack("<d", got) == struct.pack("<d", want), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def check(datas: list[bytes]) -> None:
    """unpack_many, and segments.samples over a segment holding the rows, give what unpack gives: on the
    rows as they are (a layout with few rows is left to unpack) and on the rows a dozen times over (every
    layout then has enough rows to be decoded column-wise), forwards and backwards (the row a layout is
    read from is another)."""
    check_rows(datas)
    many = datas * packing._MIN_ROWS
    check_rows(many)
    check_rows(many[::-1])


def check_rows(datas: list[bytes]) -> None:
    want = [packing.unpack(d) for d in datas]
    got = packing.unpack_many(datas)
    assert_same(got, want, "unpack_many")
    n = len(datas)
    seqs = np.arange(n, dtype=np.int64) * 3
    tss = np.arange(n, dtype=np.int64) + NOW_MS - 10_000
    seg_seqs, seg_ts, dicts = segments.samples(segments.encode(seqs, tss, datas))
    assert seg_seqs == seqs.tolist() and seg_ts == tss.tolist()
    assert_same(dicts, want, "segments.samples")
    # no two rows share a list: changing one row's list must not change another's
    lists = [id(v) for d in got for v in d.values() if type(v) is list]
    assert len(lists) == len(set(lists))


def scaled(lo: int, hi: int, scale: int) -> st.SearchStrategy[float]:
    return st.integers(lo, hi).map(lambda x: x / scale)


def edges(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Integers in [lo, hi], the ends often."""
    return st.sampled_from([lo, hi, lo + 1, hi - 1]) | st.integers(lo, hi)


U32 = 4_294_967_295
SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "source": st.sampled_from(SOURCES),
    "via": st.sampled_from(VIAS),
    "voltage_v": edges(0, U32).map(lambda x: x / 1000),
    "current_a": edges(-(2**31), 2**31 - 1).map(lambda x: x / 1000),
    "soc_pct": edges(0, 65535).map(lambda x: x / 100),
    "remaining_ah": edges(0, U32).map(lambda x: x / 1000),
    "cycles": edges(0, 65535),
    "state": st.sampled_from(STATES),
    "charge_mos": st.booleans(),
    "discharge_mos": st.booleans(),
    "charger_connected": st.booleans(),
    "load_connected": st.booleans(),
    "fault_code": edges(0, 255),
}
FAULT = st.from_regex(r"[a-zé_0-9]{1,12}", fullmatch=True)
# now and then one over 255 bytes of JSON (its length takes both bytes of its u16)
ERRORS = st.dictionaries(
    st.text(max_size=5), st.text(max_size=12) | st.text(min_size=90, max_size=130), max_size=3
)


@st.composite
def cells(draw: st.DrawFn, n: int) -> list[int]:
    """n cells: close together (packed first + int8 deltas, to the ±127 / -128 edges) or spread (u16 each)."""
    if n == 0:
        return []
    if draw(st.booleans()):
        first = draw(edges(128, 65535 - 127))
        deltas = draw(st.lists(edges(-128, 127), min_size=n - 1, max_size=n - 1))
        return [first, *(first + x for x in deltas)]
    return draw(st.lists(edges(0, 65535), min_size=n, max_size=n))


TEMPS = edges(-32768, 32767).map(lambda x: x / 10)
LISTS: dict[str, Any] = {  # a list field's values given its length
    "temps_c": lambda n: st.lists(TEMPS, min_size=n, max_size=n),
    # cell numbers 1 to 255 from bytes: far cheaper for hypothesis to draw than a list of integers
    "balancing": lambda n: st.binary(min_size=n, max_size=n).map(lambda b: [x or 255 for x in b]),
    "faults": lambda n: st.lists(FAULT, min_size=n, max_size=n),
}


@st.composite
def shapes(draw: st.DrawFn) -> dict[str, Any]:
    """A kind of sample: which fields (any subset, in any key order) and the lengths of its lists."""
    keys = draw(st.lists(st.sampled_from([*SCALARS, "cells_mv", *LISTS, "errors"]), unique=True))
    return {
        "keys": keys,
        "cells": draw(st.integers(0, 32)),
        "temps_c": draw(st.integers(0, 8)),
        "balancing": draw(st.integers(0, 4)),
        "faults": draw(st.integers(0, 2)),
    }


@st.composite
def sample_of(draw: st.DrawFn, shape: dict[str, Any], seq: int) -> dict[str, Any]:
    d: dict[str, Any] = {"battery_id": "b-1", "seq": seq, "ts": packing.ms_to_ts(NOW_MS - 1000 * seq)}
    for k in shape["keys"]:
        if k in SCALARS:
            d[k] = draw(SCALARS[k])
        elif k == "cells_mv":
            d[k] = draw(cells(shape["cells"]))
        elif k == "errors":
            d[k] = draw(ERRORS)
        else:
            d[k] = draw(LISTS[k](shape[k]))
    return d


def pack(batch: list[dict[str, Any]], one_by_one: bool) -> list[bytes]:
    """The rows as ingest stores them: validate_batch (column-wise for samples of one shape), or
    validate_and_pack sample by sample."""
    if one_by_one:
        return [packing.validate_and_pack(d, NOW_MS)[3] for d in batch]
    ok, rejected = packing.validate_batch(batch, NOW_MS)
    assert not rejected, rejected
    return [p.data for p in ok]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_random_batches_read_back_as_unpack_reads_each_row(data: st.DataObject) -> None:
    """A few kinds of sample (a segment is usually one), their samples in random order."""
    kinds = data.draw(st.lists(shapes(), min_size=1, max_size=3))
    which = data.draw(st.lists(st.integers(0, len(kinds) - 1), min_size=1, max_size=40))
    batch = [data.draw(sample_of(kinds[k], seq)) for seq, k in enumerate(which)]
    check(pack(batch, data.draw(st.booleans())))


@st.composite
def equal_length_batches(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows of one length but different layouts: the same fields, their list lengths and cell modes
    traded against each other so that every row takes the same bytes (balancing takes up the rest)."""
    keys = draw(st.lists(st.sampled_from(list(SCALARS)), unique=True))
    with_faults = draw(st.booleans())
    budget = 2 + 64 + 17 + draw(st.integers(1, 40))  # the most cells and temps can take, and some
    out = []
    for seq in range(draw(st.integers(2, 16))):
        d: dict[str, Any] = {"battery_id": "b-1", "seq": seq, "ts": packing.ms_to_ts(NOW_MS - 1000 * seq)}
        for k in keys:
            d[k] = draw(SCALARS[k])
        d["cells_mv"] = draw(cells(draw(st.integers(0, 32))))
        d["temps_c"] = draw(LISTS["temps_c"](draw(st.integers(0, 8))))
        used = len(packing._pack_cells(d["cells_mv"])[0]) + 1 + 2 * len(d["temps_c"])
        d["balancing"] = draw(LISTS["balancing"](budget - used - 1))
        if with_faults:
            d["faults"] = [draw(st.sampled_from(["ab", "cd", "ef"]))]
        out.append(d)
    return out


@settings(max_examples=200, deadline=None)
@given(equal_length_batches(), st.booleans())
def test_rows_of_equal_length_but_different_layouts(batch: list[dict[str, Any]], one_by_one: bool) -> None:
    datas = pack(batch, one_by_one)
    assert len(set(map(len, datas))) == 1
    check(datas)


def test_equal_length_layouts_by_hand() -> None:
    """Pairs that take the same bytes: 17 close cells (first + deltas) vs 9 spread ones (u16 each); two
    temperatures and no balancing vs one and two balancing cells; a source vs a via; voltage vs remaining;
    and a pair whose count bytes agree wherever the first row has one."""
    base = {"battery_id": "b-1", "seq": 1, "ts": packing.ms_to_ts(NOW_MS)}
    pairs = [
        ({"cells_mv": [3300 + i for i in range(17)]}, {"cells_mv": [1000 * i for i in range(9)]}),
        ({"temps_c": [20.5, -3.1], "balancing": []}, {"temps_c": [25.0], "balancing": [3, 4]}),
        ({"source": "a5-uart", "voltage_v": 52.1}, {"via": "wifi", "voltage_v": 52.1}),
        ({"voltage_v": 52.123}, {"remaining_ah": 52.123}),
        ({"faults": ["ab"], "fault_code": 3}, {"faults": ["abc"]}),
        ({"cells_mv": []}, {"temps_c": [], "balancing": []}),
        ({"errors": {"e": "x" * 300}}, {"errors": {"e": "y" * 300}}),
        # first + deltas vs u16 each, with the spread cells' bytes equal to the count bytes of the first
        # layout where it has them: 3330 = 0x0D02 holds a 2 where the first row's two temperatures are
        # counted, and the second row's balancing count (0) sits where the first row's does
        (
            {"cells_mv": [3300, 3301, 3302], "temps_c": [20.0, 21.0], "balancing": []},
            {"cells_mv": [0, 1000, 3330], "temps_c": [20.0], "balancing": []},
        ),
    ]
    for a, b in pairs:
        datas = [packing.validate_and_pack({**base, **x}, NOW_MS)[3] for x in (a, b, a, b, b)]
        assert len(set(map(len, datas))) == 1
        check(datas)


def test_fields_that_change_in_their_high_bytes_only() -> None:
    """Values 256 stored units apart share their low byte: a field is the same in every row only when all
    its bytes are."""
    base = {"battery_id": "b-1", "ts": packing.ms_to_ts(NOW_MS)}
    batch = [
        {
            **base,
            "seq": j,
            "voltage_v": (1000 + 256 * j + 65536 * (j % 2)) / 1000,
            "current_a": (-1 - 256 * j) / 1000,
            "soc_pct": (5 + 256 * j) / 100,
            "remaining_ah": (7 + 65536 * j) / 1000,
            "cycles": 3 + 256 * j,
            "cells_mv": [3300 + 256 * j, 3301 + 256 * j],
            "temps_c": [(250 + 256 * j) / 10],
        }
        for j in range(3)
    ]
    datas = pack(batch, True)
    assert len(set(map(len, datas))) == 1
    check(datas)


def test_a_segment_as_bench_ingest_builds_it() -> None:
    """500 16S samples of one layout (the alarm service's usual segment), and the empty batch."""
    rng = random.Random(7)
    batch = [
        {
            "battery_id": "d0-b0",
            "seq": i,
            "ts": packing.ms_to_ts(NOW_MS - 1000 * (500 - i)),
            "source": "a5-uart",
            "via": "wifi",
            "voltage_v": round(52.0 + rng.randrange(50) * 0.02, 2),
            "current_a": round(-10 + rng.randrange(200) * 0.1, 1),
            "soc_pct": round(50 + rng.randrange(500) * 0.1, 1),
            "remaining_ah": 100.0,
            "cycles": 42,
            "state": "discharging",
            "charge_mos": True,
            "discharge_mos": True,
            "charger_connected": False,
            "load_connected": True,
            "cells_mv": [3300 + rng.randrange(40) for _ in range(16)],
            "temps_c": [24.0 + rng.randrange(5), 25.0, 23.0, 26.0],
            "balancing": [],
            "faults": [],
            "fault_code": 0,
        }
        for i in range(500)
    ]
    check(pack(batch, False))
    assert packing.unpack_many([]) == []
    assert segments.samples(segments.encode(np.zeros(0, np.int64), np.zeros(0, np.int64), [])) == ([], [], [])


def test_rows_with_nothing_in_them() -> None:
    datas = [b"\x00\x00\x00"] * 3 + [b"\x00\x00\x01"]
    check(datas)


def outcome(fn: Any, arg: Any) -> Any:
    try:
        return "ok", fn(arg)
    except Exception as e:  # the exception's type is what is compared
        return "raised", type(e)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_rows_fare_as_unpack_fares(data: st.DataObject) -> None:
    """Rows with bytes changed or cut (not what ingest stores; a damaged database): the same dicts as
    unpack, or the same exception as the first row unpack fails on."""
    kinds = data.draw(st.lists(shapes(), min_size=1, max_size=2))
    which = data.draw(st.lists(st.integers(0, len(kinds) - 1), min_size=1, max_size=12))
    datas = pack([data.draw(sample_of(kinds[k], seq)) for seq, k in enumerate(which)], True)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(datas) - 1))
        row = bytearray(datas[i])
        if data.draw(st.booleans()) and len(row) > 0:
            row[data.draw(st.integers(0, len(row) - 1))] = data.draw(st.integers(0, 255))
        else:
            del row[data.draw(st.integers(0, len(row))) :]
        datas[i] = bytes(row)
    for rows in (datas, datas * packing._MIN_ROWS):  # the second: enough rows to go column-wise
        want = outcome(lambda ds: [packing.unpack(d) for d in ds], rows)
        got = outcome(packing.unpack_many, rows)
        if want[0] == "ok":
            assert got[0] == "ok", got
            assert_same(got[1], want[1])
        else:
            assert got == want


@pytest.mark.parametrize("cut", [1, 2, 4])
@pytest.mark.parametrize(
    "fields", [{"temps_c": [20.5, 21.5, -3.0]}, {"cells_mv": [0, 1000, 3330]}, {"balancing": [1, 2, 3]}]
)
def test_rows_cut_short_in_their_last_list_fare_as_unpack_fares(fields: dict[str, Any], cut: int) -> None:
    """A row whose last list reaches past its end (every count byte still there): unpack raises (cells,
    temperatures) or reads what is there (balancing); so does unpack_many, a dozen such rows or one."""
    row = packing.validate_and_pack(
        {"battery_id": "b", "seq": 1, "ts": packing.ms_to_ts(NOW_MS), **fields}, NOW_MS
    )[3]
    for datas in ([row[:-cut]], [row[:-cut]] * packing._MIN_ROWS):
        want = outcome(lambda ds: [packing.unpack(d) for d in ds], datas)
        got = outcome(packing.unpack_many, datas)
        assert got[0] == want[0]
        if want[0] == "ok":
            assert_same(got[1], want[1])
        else:
            assert got == want


@pytest.mark.parametrize("code", [len(STATES), 255])
def test_an_unknown_state_code_raises_as_unpack_does(code: int) -> None:
    row = bytearray(
        packing.validate_and_pack(
            {"battery_id": "b", "seq": 1, "ts": packing.ms_to_ts(NOW_MS), "state": STATES[0]}, NOW_MS
        )[3]
    )
    row[-1] = code
    datas = [bytes(row)] * 4
    with pytest.raises(IndexError):
        packing.unpack(datas[0])
    with pytest.raises(IndexError):
        packing.unpack_many(datas)
