"""The packed sample row: what goes in comes out (at the stored resolution), and junk is refused by name."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trackingbms.model import SOURCES, STATES, VIAS, Sample
from trackingbms.server.store import packing

NOW_MS = 1_795_516_787_000


def scaled(lo: int, hi: int, scale: int) -> st.SearchStrategy[float]:
    return st.integers(lo, hi).map(lambda x: x / scale)


def optional(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


samples = st.fixed_dictionaries(
    {
        "battery_id": st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
        "seq": st.integers(0, 2**63 - 1),
        "ts": st.integers(packing.MIN_TS_MS, NOW_MS).map(packing.ms_to_ts),
    },
    optional={
        "source": optional(st.sampled_from(SOURCES)),
        "via": optional(st.sampled_from(VIAS)),
        "voltage_v": optional(scaled(0, 200_000, 1000)),
        "current_a": optional(scaled(-600_000, 600_000, 1000)),
        "soc_pct": optional(scaled(0, 10_000, 100)),
        "remaining_ah": optional(scaled(0, 2_000_000, 1000)),
        "cycles": optional(st.integers(0, 65535)),
        "state": optional(st.sampled_from(STATES)),
        "charge_mos": optional(st.booleans()),
        "discharge_mos": optional(st.booleans()),
        "charger_connected": optional(st.booleans()),
        "load_connected": optional(st.booleans()),
        "cells_mv": optional(st.lists(st.integers(0, 65535), max_size=48)),
        "temps_c": optional(st.lists(scaled(-400, 1500, 10), max_size=8)),
        "balancing": optional(st.lists(st.integers(1, 48), max_size=48)),
        "faults": optional(st.lists(st.from_regex(r"[a-z0-9_]{1,30}", fullmatch=True), max_size=5)),
        "fault_code": optional(st.integers(0, 255)),
        "errors": optional(st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=3)),
    },
)


@settings(max_examples=300, deadline=None)
@given(samples)
def test_round_trip_at_stored_resolution(d: dict[str, Any]) -> None:
    bid, seq, ts_ms, data, stats = packing.validate_and_pack(d, NOW_MS)
    out = packing.to_sample(bid, seq, ts_ms, data)
    assert out == {k: v for k, v in d.items() if v is not None}
    Sample.model_validate(out)  # and it is a valid wire Sample
    assert stats == packing.series_values(data)  # ingest-time figures match what a stored row gives


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(samples, st.sampled_from(sorted(packing._KNOWN)), junk)
def test_junk_in_any_field_is_refused_by_name_or_stored_faithfully(
    d: dict[str, Any], key: str, value: Any
) -> None:
    d = {**d, key: value}
    try:
        bid, seq, ts_ms, data, _ = packing.validate_and_pack(d, NOW_MS)
    except packing.SampleError as e:
        assert str(e).startswith((key, "sample")), (key, str(e))
        return
    out = packing.to_sample(bid, seq, ts_ms, data)
    Sample.model_validate(out)
    # accepted: then stored as given, at the stored resolution
    if key == "ts":
        assert ts_ms == packing.parse_ts_ms(value)
    elif value is None or (value == [] and key == "cells_mv"):
        assert key not in out or out[key] == value, (key, value, out.get(key))
    elif key in RESOLUTION:
        got, sent = (out[key], value) if isinstance(value, list) else ([out[key]], [value])
        assert len(got) == len(sent)
        for g, v in zip(got, sent, strict=True):
            assert abs(g - v) <= RESOLUTION[key] / 2 + 1e-9, (key, value, out[key])
    else:
        assert out[key] == value, (key, value, out[key])


#: the stored resolution of the scaled fields (the strategies above draw at exactly this resolution)
RESOLUTION = {"voltage_v": 0.001, "current_a": 0.001, "soc_pct": 0.01, "remaining_ah": 0.001, "temps_c": 0.1}
