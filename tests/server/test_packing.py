"""The packed sample row: what goes in comes out (at the stored resolution), and junk is refused by name."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
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


#: one strategy per optional field, never None (a batch of one shape: what the column-wise path takes)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "source": st.sampled_from(SOURCES),
    "via": st.sampled_from(VIAS),
    "voltage_v": scaled(0, 200_000, 1000) | st.integers(0, 200),
    "current_a": scaled(-600_000, 600_000, 1000),
    "soc_pct": scaled(0, 10_000, 100),
    "remaining_ah": scaled(0, 2_000_000, 1000),
    "cycles": st.integers(0, 65535),
    "state": st.sampled_from(STATES),
    "charge_mos": st.booleans(),
    "discharge_mos": st.booleans(),
    "charger_connected": st.booleans(),
    "load_connected": st.booleans(),
    "balancing": st.lists(st.integers(1, 48), max_size=3),
    "faults": st.lists(st.from_regex(r"[a-z0-9_]{1,30}", fullmatch=True), max_size=2),
    "fault_code": st.integers(0, 255),
    "errors": st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=2),
}


def render_ts(ms: int, offset_min: int, style: str) -> str:
    """The instant ``ms`` as a gateway might write it: local time at ``offset_min`` from UTC, in ``style``."""
    t = datetime.fromtimestamp(ms / 1000, UTC).astimezone(timezone(timedelta(minutes=offset_min)))
    sign = "-" if offset_min < 0 else "+"
    zone = "Z" if style.endswith("Z") else f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    if style.startswith("ms"):  # the fast path's two forms: .mmmZ, .mmm±HH:MM
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}" + zone
    if style.startswith("us"):
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + zone
    if style.startswith("s"):
        return t.strftime("%Y-%m-%dT%H:%M:%S") + zone
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}" + zone  # space for T


TS_STYLES = ["msZ", "ms", "usZ", "us", "sZ", "s", "spaceZ"]
#: one character of a fast-path time changed: month 13, day 31 in a 30-day month, hour 24, 60 s, ...
SPOIL = st.tuples(st.integers(0, 28), st.sampled_from("0123456789-+:.TZz /x"))


@st.composite
def timestamps(draw: st.DrawFn, style: str | None = None, offset_min: int | None = None) -> str:
    """An RFC 3339 time in one of the styles, at times spoiled (one character replaced)."""
    ms = draw(st.integers(packing.MIN_TS_MS - 86_400_000, NOW_MS + 3_600_000))
    if offset_min is None:
        offset_min = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    ts = render_ts(ms, offset_min, style or draw(st.sampled_from(TS_STYLES)))
    if draw(st.integers(0, 9)) == 0:
        pos, ch = draw(SPOIL)
        if pos < len(ts):
            ts = ts[:pos] + ch + ts[pos + 1 :]
    return ts


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_column_of_times_reads_as_each_time_does(data: st.DataObject) -> None:
    """_ts_column_ms (numpy over the column) is parse_ts_ms of each, or None (then each is parsed)."""
    style = data.draw(st.sampled_from([*TS_STYLES, None]))
    offset = data.draw(st.none() | st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    col = tuple(data.draw(st.lists(timestamps(style, offset), min_size=1, max_size=20)))
    got = packing._ts_column_ms(col)
    if got is None:  # then each is parsed: fine unless all were plain fast-path times
        one_width = len(set(map(len, col))) == 1
        assert not (one_width and all(map(_fast_form, col))), col
        return
    assert got == [packing.parse_ts_ms(t) for t in col], col


#: the forms _ts_column_ms reads (one width per column: all Z, or all with an offset of hours 00-23 and
#: minutes 00-59; parse_ts_ms also takes "+00:60", which the column reader leaves to it)
FAST_FORM = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]([01]\d|2[0-3]):[0-5]\d)")


def _fast_form(ts: str) -> bool:
    """A valid time from 1970 on written as gateways write it (before 1970 parse_ts_ms rounds oddly)."""
    return bool(FAST_FORM.fullmatch(ts)) and not _refused(ts) and packing.parse_ts_ms(ts) >= 0


def _refused(ts: str) -> bool:
    try:
        packing.parse_ts_ms(ts)
    except packing.SampleError:
        return True
    return False


def test_the_forms_gateways_send_take_the_column_wise_time_path() -> None:
    """format_ts's form and the same with an offset are read by numpy (a change that made every column
    fall back to parse_ts_ms would pass the equality above and quietly cost the speed)."""
    for offset_min, style in ((0, "msZ"), (120, "ms"), (-330, "ms"), (0, "ms")):
        col = tuple(render_ts(NOW_MS - k * 1000, offset_min, style) for k in range(5))
        assert packing._ts_column_ms(col) == [NOW_MS - k * 1000 for k in range(5)], col
    # across midnight, a month's end and a leap day (several dates in one column)
    days = ("2024-02-28T23:59:59.999Z", "2024-02-29T00:00:00.000Z", "2024-03-01T00:00:00.001Z")
    assert packing._ts_column_ms(days) == [1709164799999, 1709164800000, 1709251200001]
    local = (
        "2024-02-29T01:00:00.000+01:00",
        "2024-02-28T19:00:00.000-05:00",
        "2024-03-01T05:30:00.001+05:30",
    )
    assert packing._ts_column_ms(local) == [1709164800000, 1709164800000, 1709251200001]
    for bad in (
        "2023-02-29T00:00:00.000Z",
        "2026-04-31T00:00:00.000Z",
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:60:00.000Z",
        "2026-01-01T00:00:60.000Z",
        "2026-01-01T00:00:00.000+24:00",
        "0000-01-01T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000+01:60",  # datetime reads it as +02:00: left to parse_ts_ms
    ):
        assert packing._ts_column_ms((days[0] if len(bad) == 24 else local[0], bad)) is None, bad
        assert _refused(bad) or packing.parse_ts_ms(bad) == packing.parse_ts_ms("2026-01-01T00:00:00+02:00")


@st.composite
def same_shape_batches(draw: st.DrawFn) -> list[Any]:
    """Samples with the same keys (as a gateway sends them), cells and temperatures mostly of one length
    per batch (the matrix path) with compact and wide cells, and now and then one spoiled value."""
    keys = draw(st.lists(st.sampled_from([*VALUES, "cells_mv", "temps_c"]), unique=True))
    n_cells = draw(st.integers(1, 24))
    n_temps = draw(st.integers(1, 6))
    # compact (deltas fit a byte), wide, or both in one batch
    mv = draw(
        st.sampled_from(
            [st.integers(3250, 3378), st.integers(0, 65535), st.integers(3250, 3378) | st.integers(0, 65535)]
        )
    )
    celsius = scaled(-400, 1500, 10) | st.integers(-40, 150) | st.sampled_from([-0.04, 0.05, 0.15, 2.25])
    # one length per batch (one pack model: the matrix path), or any length per sample
    fixed_cells, fixed_temps = draw(st.booleans()), draw(st.booleans())
    lists = {
        "cells_mv": st.lists(mv, min_size=n_cells, max_size=n_cells)
        if fixed_cells
        else st.lists(mv, min_size=n_cells, max_size=n_cells) | st.lists(mv, min_size=1, max_size=30),
        "temps_c": st.lists(celsius, min_size=n_temps, max_size=n_temps)
        if fixed_temps
        else st.lists(celsius, min_size=n_temps, max_size=n_temps)
        | st.lists(scaled(-32768, 32767, 10), min_size=1, max_size=8),
    }
    # mostly one style and offset per batch (a gateway's), now and then any time in any style
    ts_style = draw(
        st.sampled_from(
            [
                st.integers(packing.MIN_TS_MS, NOW_MS).map(packing.ms_to_ts),
                timestamps(draw(st.sampled_from(TS_STYLES)), draw(st.integers(-1439, 1439))),
                timestamps(),
            ]
        )
    )
    shape = st.fixed_dictionaries(
        {
            "battery_id": st.sampled_from(["p1", "p2", "p-3"]),
            "seq": st.integers(0, 2**63 - 1),
            "ts": ts_style,
            **{k: lists[k] if k in lists else VALUES[k] for k in keys},
        }
    )
    batch: list[Any] = draw(st.lists(shape, max_size=12))
    if batch and draw(st.booleans()):
        i = draw(st.integers(0, len(batch) - 1))
        key = draw(st.sampled_from(sorted(batch[i])))
        batch[i] = {**batch[i], key: draw(junk)}
    if draw(st.booleans()):
        batch.append(draw(junk))  # not even an object
    return batch


@settings(max_examples=400, deadline=None)
@given(same_shape_batches())
def test_a_batch_packs_as_its_samples_do_one_by_one(batch: list[Any]) -> None:
    """validate_batch (column-wise, matrices for the cells and temperatures) against validate_and_pack:
    the same bytes, the same figures, the same refusals with the same messages, in batch order."""
    got, rejected = packing.validate_batch(batch, NOW_MS)
    want: list[tuple[Any, ...]] = []
    want_rejected: list[dict[str, Any]] = []
    for i, d in enumerate(batch):
        try:
            bid, seq, ts_ms, data, stats = packing.validate_and_pack(d, NOW_MS)
        except packing.SampleError as e:
            want_rejected.append({"index": i, "error": str(e)})
            continue
        want.append((i, bid, seq, ts_ms, data, d, stats))
    assert [tuple(p) for p in got] == want
    assert [tuple(map(repr, p.series)) for p in got] == [tuple(map(repr, w[6])) for w in want]  # -0.0
    assert rejected == want_rejected


def test_a_plain_batch_takes_the_column_wise_path() -> None:
    """The fast path is the one that runs for what gateways send (a change that made it give up on every
    batch would pass the equality test above and quietly cost the speed)."""
    full = {
        "battery_id": "p1",
        "seq": 1,
        "ts": packing.ms_to_ts(NOW_MS - 1000),
        "source": "a5-uart",
        "via": "wifi",
        "voltage_v": 52.1,
        "current_a": -3.2,
        "soc_pct": 50.5,
        "remaining_ah": 100.0,
        "cycles": 42,
        "state": "discharging",
        "charge_mos": True,
        "discharge_mos": True,
        "charger_connected": False,
        "load_connected": True,
        "cells_mv": [3300 + c for c in range(16)],
        "temps_c": [24.0, 25.5, 23.0, 26.0],
        "balancing": [],
        "faults": [],
        "fault_code": 0,
    }
    group = [full, {**full, "seq": 2, "cells_mv": [3300] * 15 + [3000]}, {**full, "seq": 3, "voltage_v": 52}]
    packed = packing._pack_columns(tuple(full), group, range(3), NOW_MS, packing.MAX_FUTURE_SKEW_MS)
    assert packed is not None
    assert [p.data for p in packed] == [packing.validate_and_pack(d, NOW_MS)[3] for d in group]


@pytest.mark.parametrize(
    ("cells", "temps"),
    [
        ([[3300, 3427], [3301, 3428]], [[-0.04, 0.5], [0.05, 1.0]]),  # deltas +127: compact; -0.0
        ([[3300, 3172], [3301, 3173]], [[-3276.8, 3276.7], [0.15, 2.25]]),  # -128: compact; the i16 ends
        ([[3300, 3428], [3300, 3171]], [[-0.05, -0.05], [21.26, 0]]),  # one past: wide
        ([[0, 65535], [65535, 0]], [[1], [2]]),
    ],
)
def test_the_matrix_path_at_its_edges(cells: list[list[int]], temps: list[list[float]]) -> None:
    """Both cell modes at their limits, a temperature rounding to -0.0 (stored 0: the figure is 0.0)."""
    group = [
        {"battery_id": "p1", "seq": i, "ts": packing.ms_to_ts(NOW_MS), "cells_mv": c, "temps_c": t}
        for i, (c, t) in enumerate(zip(cells, temps, strict=True))
    ]
    packed = packing._pack_columns(
        tuple(group[0]), group, range(len(group)), NOW_MS, packing.MAX_FUTURE_SKEW_MS
    )
    assert packed is not None
    want = [packing.validate_and_pack(d, NOW_MS) for d in group]
    assert [p.data for p in packed] == [w[3] for w in want]
    assert [repr(p.series) for p in packed] == [repr(w[4]) for w in want]


def test_power_figures_at_a_rounding_half() -> None:
    """round(v * c, 3) where the product's thousandths end in a half: numpy's rint(p * 1000) / 1000 would
    be a milliwatt off for each of these pairs (1 in ~600 samples of random 3-decimal figures)."""
    pairs = [(57.75, -238.078), (184.25, -457.154), (28.37, 475.65), (150.5, 59.353), (12.125, -258.62)]
    group = [
        {"battery_id": "p1", "seq": i, "ts": packing.ms_to_ts(NOW_MS), "voltage_v": v, "current_a": c}
        for i, (v, c) in enumerate([*pairs, (52.1, -3.2)])
    ]
    packed = packing._pack_columns(
        tuple(group[0]), group, range(len(group)), NOW_MS, packing.MAX_FUTURE_SKEW_MS
    )
    assert packed is not None
    assert [p.series[3] for p in packed] == [round(v * c, 3) for v, c in [*pairs, (52.1, -3.2)]]
    assert [p.series[3] for p in packed][:2] == [-13749.005, -84230.625]


@pytest.mark.parametrize(
    ("key", "spoiled"),
    [
        ("cells_mv", [3300, True, 3301]),  # numpy / struct read True as 1
        ("cells_mv", [False, 3300, 3301]),
        ("temps_c", [25.0, True]),  # ... and as 1.0
        ("temps_c", [False, 0]),
        ("cells_mv", [3300, 3301.0, 3302]),  # a float where an int belongs
    ],
)
def test_a_bool_or_float_in_a_list_is_refused_as_sample_by_sample(key: str, spoiled: list[Any]) -> None:
    """The matrix path takes numbers as struct reads them; a JSON true among them must still be refused
    with validate_and_pack's message (for the one sample), the others stored."""
    good = {
        "battery_id": "p1",
        "ts": packing.ms_to_ts(NOW_MS),
        "cells_mv": [3300, 3301, 3302],
        "temps_c": [20.0, 21.5],
    }
    batch = [{**good, "seq": i} for i in range(4)]
    batch[2] = {**batch[2], key: spoiled}
    got, rejected = packing.validate_batch(batch, NOW_MS)
    with pytest.raises(packing.SampleError) as e:
        packing.validate_and_pack(batch[2], NOW_MS)
    assert rejected == [{"index": 2, "error": str(e.value)}]
    assert [p.index for p in got] == [0, 1, 3]
    assert [p.data for p in got] == [packing.validate_and_pack(batch[i], NOW_MS)[3] for i in (0, 1, 3)]
