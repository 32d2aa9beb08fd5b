"""The packed sample row byte for byte, its limits at their exact edges, and every refusal by its message.

The blob is rebuilt here from the layout in packing.py's docstring with ``struct`` (not with packing's own
helpers), so a change of the stored format fails here before it reaches a database. Fast on purpose (no
hypothesis, no database): bench/mutation.py runs this file against every mutant of packing.py; the
hypothesis round trip of any sample is tests/server/test_packing.py.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import orjson
import pytest

from trackingbms.model import SOURCES, VIAS
from trackingbms.server.store import packing
from trackingbms.server.store.packing import SampleError, ms_to_ts, to_sample, unpack, validate_and_pack

NOW_MS = 1_795_516_787_000
NOW = ms_to_ts(NOW_MS)


@pytest.fixture(autouse=True)
def cold_struct_caches() -> None:
    """Packing caches one struct per presence mask and list length: start each test cold, so the code that
    builds them runs here too (a process that packed before would only ever take the cached ones)."""
    for cache in (packing._SCALARS, packing._CELLS_COMPACT, packing._CELLS_RAW, packing._TEMPS):
        cache.clear()


def test_the_cached_structs_pack_what_the_fresh_ones_did() -> None:
    d = base(voltage_v=1.5, load_connected=True, cells_mv=[3300, 3301], temps_c=[1.5], errors={"a": "b"})
    wide = base(cells_mv=[0, 1000])
    cold = packed(**d), packed(**wide)
    assert (packed(**d), packed(**wide)) == cold
    assert (to_sample(*validate_and_pack(d, NOW_MS)[:4]), round_trip(**wide)) == (d, wide)


def test_each_list_length_gets_its_own_struct() -> None:
    for cells in ([3300, 3301], [3300, 3301, 3302], [0, 1000], [0, 1000, 2000], [3300], [0, 9000, 1, 2]):
        assert round_trip(cells_mv=cells)["cells_mv"] == cells
    for temps in ([1.5], [1.5, 2.5], [1.5, 2.5, -3.5]):
        assert round_trip(temps_c=temps)["temps_c"] == temps


def test_what_follows_raw_cells_and_a_lone_source_unpack_in_place() -> None:
    fields = {"cells_mv": [0, 1000, 65535], "temps_c": [1.5, -2.5], "balancing": [2], "fault_code": 4}
    assert round_trip(**fields) == base(**fields)
    assert round_trip(source="sim") == base(source="sim")  # no via
    assert round_trip(via="wifi") == base(via="wifi")  # no source


def test_the_presence_mask_is_little_endian() -> None:
    assert packing.presence_mask(packed(voltage_v=1.0, errors={})) == 1 | 32768
    assert packing.presence_mask(bytes([0x01, 0x80, 0])) == 0x8001


def base(**fields: Any) -> dict[str, Any]:
    return {"battery_id": "pack-1", "seq": 7, "ts": NOW, **fields}


def packed(**fields: Any) -> bytes:
    return validate_and_pack(base(**fields), NOW_MS)[3]


def round_trip(**fields: Any) -> dict[str, Any]:
    bid, seq, ts_ms, data, _ = validate_and_pack(base(**fields), NOW_MS)
    return to_sample(bid, seq, ts_ms, data)


def refused(d: Any, message: str, **kw: Any) -> None:
    with pytest.raises(SampleError) as e:
        validate_and_pack(d, NOW_MS, **kw)
    assert str(e.value) == message


def test_a_full_sample_packs_to_the_documented_layout_and_back() -> None:
    errors = {"0x92": "timeout"}
    d = base(
        source="a5-uart",
        via="lan",
        voltage_v=53.2,
        current_a=-2.1,
        soc_pct=88.8,
        remaining_ah=248.64,
        cycles=3,
        state="discharging",
        charge_mos=True,
        discharge_mos=False,
        charger_connected=True,
        load_connected=False,
        cells_mv=[3300, 3301, 3290],
        temps_c=[25.0, -10.5],
        balancing=[1, 3],
        faults=["a", "bc"],
        fault_code=3,
        errors=errors,
    )
    bid, seq, ts_ms, data, stats = validate_and_pack(d, NOW_MS)
    err = orjson.dumps(errors)
    assert (bid, seq, ts_ms) == ("pack-1", 7, NOW_MS)
    assert data == (
        struct.pack("<HB", 0xFFFF, 1 | 1 << 4)
        + struct.pack("<IiHIHBB", 53200, -2100, 8880, 248640, 3, 2, 0b0101)
        + struct.pack("<BBH2b", 3, 0, 3300, 1, -10)
        + struct.pack("<B2h", 2, 250, -105)
        + bytes([2, 1, 3])
        + bytes([4])
        + b"a,bc"
        + bytes([3])
        + struct.pack("<H", len(err))
        + err
    )
    assert packing.presence_mask(data) == 0xFFFF
    assert to_sample(bid, seq, ts_ms, data) == d
    assert stats == (53.2, -2.1, 88.8, -111.72, 3290, 3301, 11, 25.0, -10.5)
    assert packing.series_values(data) == stats


def test_an_identity_only_sample_is_three_bytes_and_stays_empty() -> None:
    bid, seq, ts_ms, data, stats = validate_and_pack(base(), NOW_MS)
    assert data == b"\x00\x00\x00" and unpack(data) == {}
    assert stats == (None,) * 9
    assert to_sample(bid, seq, ts_ms, data) == base()


@pytest.mark.parametrize(
    ("fields", "mask", "body"),
    [
        ({"current_a": 0.001}, 2, struct.pack("<i", 1)),
        ({"soc_pct": 100.0}, 4, struct.pack("<H", 10000)),
        ({"remaining_ah": 0.5}, 8, struct.pack("<I", 500)),
        ({"cycles": 65535}, 16, struct.pack("<H", 65535)),
        ({"state": "idle"}, 32, b"\x00"),
        ({"state": "charging"}, 32, b"\x01"),
        ({"charge_mos": False}, 64, b"\x00"),
        ({"charge_mos": True}, 64, b"\x01"),
        ({"discharge_mos": True}, 128, b"\x02"),
        ({"charger_connected": True}, 256, b"\x04"),
        ({"load_connected": True}, 512, b"\x08"),
        ({"load_connected": False, "charge_mos": True}, 576, b"\x01"),
        ({"cells_mv": []}, 1024, b"\x00\x00"),
        ({"temps_c": []}, 2048, b"\x00"),
        ({"balancing": []}, 4096, b"\x00"),
        ({"faults": []}, 8192, b"\x00"),
        ({"fault_code": 0}, 16384, b"\x00"),
        ({"errors": {}}, 32768, b"\x02\x00{}"),
        ({"voltage_v": 0.0, "cycles": 1, "load_connected": True}, 1 | 16 | 512, struct.pack("<IHB", 0, 1, 8)),
    ],
)
def test_each_field_has_its_bit_and_its_bytes(fields: dict[str, Any], mask: int, body: bytes) -> None:
    data = packed(**fields)
    assert data == struct.pack("<HB", mask, 0) + body
    assert unpack(data) == fields


def test_source_and_via_share_a_byte() -> None:
    assert packed(source="sim")[2] == 7  # the 7th source, 1-based (0 = absent)
    assert packed(via="ble")[2] == 6 << 4
    assert packed(source="hkms-can", via="lan")[2] == 9 | 1 << 4
    assert round_trip(source="hkms-can", via="phone") == base(source="hkms-can", via="phone")
    assert round_trip(source=None, via=None) == base()


@pytest.mark.parametrize(
    ("cells", "mode"),
    [
        ([3300, 3427], 0),  # +127: the largest delta an i8 holds
        ([3300, 3428], 1),
        ([3300, 3172], 0),  # -128
        ([3300, 3171], 1),
        ([0, 65535], 1),
        ([65535], 0),
        ([0], 0),
    ],
)
def test_cells_pack_compact_while_the_deltas_fit_a_byte(cells: list[int], mode: int) -> None:
    data = packed(cells_mv=cells)
    assert data[3:5] == bytes([len(cells), mode])
    assert len(data) == 5 + (2 + len(cells) - 1 if mode == 0 else 2 * len(cells))
    assert unpack(data) == {"cells_mv": cells}
    stats = validate_and_pack(base(cells_mv=cells), NOW_MS)[4]
    assert stats[4:7] == (min(cells), max(cells), max(cells) - min(cells))


def test_the_largest_lists() -> None:
    cells = [3300 + i % 100 for i in range(255)]
    assert round_trip(cells_mv=cells)["cells_mv"] == cells
    temps = [-3276.8, 3276.7] + [0.0] * 253
    assert round_trip(temps_c=temps)["temps_c"] == temps
    assert validate_and_pack(base(temps_c=[-3276.8, 3276.7]), NOW_MS)[4][7:] == (3276.7, -3276.8)
    assert round_trip(balancing=list(range(1, 256)))["balancing"] == list(range(1, 256))
    fault = "f" * 255
    assert round_trip(faults=[fault])["faults"] == [fault]
    errors = {"k": "v" * (4096 - len('{"k":""}'))}
    assert round_trip(errors=errors)["errors"] == errors
    assert round_trip(temps_c=[0.04, -0.05, 21.26])["temps_c"] == [0.0, -0.0, 21.3]


def test_scalar_limits() -> None:
    top = base(voltage_v=4294967.295, current_a=-2147483.648, soc_pct=655.35, remaining_ah=4294967.295)
    assert round_trip(**{k: v for k, v in top.items() if k not in base()}) == top
    assert (
        round_trip(current_a=2147483.647, voltage_v=0, remaining_ah=0, soc_pct=0)["current_a"] == 2147483.647
    )
    assert round_trip(voltage_v=12, cycles=0, fault_code=255) == base(
        voltage_v=12.0, cycles=0, fault_code=255
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"voltage_v": "52"}, "voltage_v: must be a number"),
        ({"voltage_v": True}, "voltage_v: must be a number"),
        ({"voltage_v": -0.001}, "voltage_v: -0.001 is out of range (0.0 to 4294967.295)"),
        ({"voltage_v": 4294967.296}, "voltage_v: 4294967.296 is out of range (0.0 to 4294967.295)"),
        ({"voltage_v": float("nan")}, "voltage_v: must be finite"),
        ({"current_a": [1]}, "current_a: must be a number"),
        (
            {"current_a": 2147483.648},
            "current_a: 2147483.648 is out of range (-2147483.648 to 2147483.647)",
        ),
        (
            {"current_a": -2147483.649},
            "current_a: -2147483.649 is out of range (-2147483.648 to 2147483.647)",
        ),
        ({"current_a": float("inf")}, "current_a: must be finite"),
        ({"soc_pct": None, "voltage_v": 1, "current_a": float("-inf")}, "current_a: must be finite"),
        ({"soc_pct": "1"}, "soc_pct: must be a number"),
        ({"soc_pct": -0.01}, "soc_pct: -0.01 is out of range (0.0 to 655.35)"),
        ({"soc_pct": 655.36}, "soc_pct: 655.36 is out of range (0.0 to 655.35)"),
        ({"soc_pct": float("nan")}, "soc_pct: must be finite"),
        ({"remaining_ah": {}}, "remaining_ah: must be a number"),
        ({"remaining_ah": -0.001}, "remaining_ah: -0.001 is out of range (0.0 to 4294967.295)"),
        ({"remaining_ah": 4294967.296}, "remaining_ah: 4294967.296 is out of range (0.0 to 4294967.295)"),
        ({"remaining_ah": float("inf")}, "remaining_ah: must be finite"),
        ({"cycles": 1.0}, "cycles: must be an integer"),
        ({"cycles": False}, "cycles: must be an integer"),
        ({"cycles": -1}, "cycles: -1 is out of range (0 to 65535)"),
        ({"cycles": 65536}, "cycles: 65536 is out of range (0 to 65535)"),
        ({"state": "resting"}, "state: must be one of idle, charging, discharging"),
        ({"state": 0}, "state: must be one of idle, charging, discharging"),
        ({"charge_mos": 1}, "charge_mos: must be true or false"),
        ({"discharge_mos": "true"}, "discharge_mos: must be true or false"),
        ({"charger_connected": 0}, "charger_connected: must be true or false"),
        ({"load_connected": []}, "load_connected: must be true or false"),
        ({"cells_mv": (3300,)}, "cells_mv: must be a list of at most 255 integers"),
        ({"cells_mv": [3300] * 256}, "cells_mv: must be a list of at most 255 integers"),
        ({"cells_mv": [3300, -1]}, "cells_mv.1: must be an integer 0 to 65535"),
        ({"cells_mv": [3300, 65536]}, "cells_mv.1: must be an integer 0 to 65535"),
        ({"cells_mv": [3300, 3300.0]}, "cells_mv.1: must be an integer 0 to 65535"),
        ({"cells_mv": [True]}, "cells_mv.0: must be an integer 0 to 65535"),
        # the edges themselves are fine: the element named is the one past them
        ({"cells_mv": [0, 65536]}, "cells_mv.1: must be an integer 0 to 65535"),
        ({"cells_mv": [65535, -1]}, "cells_mv.1: must be an integer 0 to 65535"),
        ({"temps_c": [-3276.8, float("nan")]}, "temps_c.1: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [3276.7, float("inf")]}, "temps_c.1: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": "25"}, "temps_c: must be a list of at most 255 numbers"),
        ({"temps_c": [25.0] * 256}, "temps_c: must be a list of at most 255 numbers"),
        ({"temps_c": [25, 3276.76]}, "temps_c.1: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [-3276.86]}, "temps_c.0: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [1, float("nan")]}, "temps_c.1: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [float("inf")]}, "temps_c.0: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [1, None]}, "temps_c.1: must be a number from -3276.8 to 3276.7"),
        ({"temps_c": [False]}, "temps_c.0: must be a number from -3276.8 to 3276.7"),
        ({"balancing": {1}}, "balancing: must be a list of cell numbers"),
        ({"balancing": [1] * 256}, "balancing: must be a list of cell numbers"),
        ({"balancing": [1, 0]}, "balancing.1: must be a cell number 1 to 255"),
        ({"balancing": [256]}, "balancing.0: must be a cell number 1 to 255"),
        ({"balancing": [1, True]}, "balancing.1: must be a cell number 1 to 255"),
        ({"balancing": [255, 0]}, "balancing.1: must be a cell number 1 to 255"),
        # unhashable junk is refused by name too, not with a TypeError
        ({"source": ["sim"]}, "source: must be one of " + ", ".join(SOURCES)),
        ({"via": {"lan": 1}}, "via: must be one of " + ", ".join(VIAS)),
        ({"state": ["idle"]}, "state: must be one of idle, charging, discharging"),
        ({"faults": "a"}, "faults: must be a list of fault names"),
        ({"faults": ["a", ""]}, "faults.1: must be a fault name"),
        ({"faults": ["a,b"]}, "faults.0: must be a fault name"),
        ({"faults": [1]}, "faults.0: must be a fault name"),
        ({"faults": ["f" * 128, "g" * 127]}, "faults: too long"),
        ({"fault_code": 256}, "fault_code: 256 is out of range (0 to 255)"),
        ({"fault_code": -1}, "fault_code: -1 is out of range (0 to 255)"),
        ({"fault_code": "3"}, "fault_code: must be an integer"),
        ({"errors": []}, "errors: must be an object of strings"),
        ({"errors": {"a": 1}}, "errors: must be an object of strings"),
        ({"errors": {1: "a"}}, "errors: must be an object of strings"),
        ({"errors": {"k": "v" * 4089}}, "errors: too long"),
    ],
)
def test_field_errors_name_the_field(fields: dict[str, Any], message: str) -> None:
    refused(base(**fields), message)


def test_identity_errors() -> None:
    refused(["pack-1"], "sample: must be an object")
    refused({**base(), "colour": "red"}, "colour: unknown field")
    rule = "battery_id: must match [A-Za-z0-9._-]{1,64}"
    refused({"seq": 1, "ts": NOW}, rule)
    refused(base(battery_id="pack 1"), rule)
    refused(base(battery_id="p" * 65), rule)
    refused({"battery_id": "p", "ts": NOW}, "seq: field required")
    refused(base(seq=-1), "seq: -1 is out of range (0 to 9223372036854775807)")
    refused(base(seq=2**63), "seq: 9223372036854775808 is out of range (0 to 9223372036854775807)")
    refused(base(seq="1"), "seq: must be an integer")
    assert validate_and_pack(base(seq=2**63 - 1), NOW_MS)[1] == 2**63 - 1
    assert validate_and_pack(base(seq=0, battery_id="p" * 64), NOW_MS)[:2] == ("p" * 64, 0)
    refused({"battery_id": "p", "seq": 1}, "ts: field required")
    sources = "a5-uart, a5-rs485, a5-can, a5-ble, d2-rs485, d2-ble, sim, p81-rs485, hkms-can"
    refused(base(source="a5"), f"source: must be one of {sources}")
    refused(base(source=1), f"source: must be one of {sources}")
    refused(base(via="carrier-pigeon"), "via: must be one of lan, wifi, cellular, mqtt, phone, ble")
    refused(base(via=0), "via: must be one of lan, wifi, cellular, mqtt, phone, ble")


def test_times() -> None:
    assert packing.parse_ts_ms("2026-11-24T10:00:00.123999Z") == 1795514400123
    assert packing.parse_ts_ms("2026-11-24T11:00:00+01:00") == 1795514400000
    assert packing.parse_ts_ms(NOW) == NOW_MS and ms_to_ts(NOW_MS + 7) == NOW[:-4] + "007Z"
    with pytest.raises(SampleError, match=r"^at: must be an RFC 3339 string$"):
        packing.parse_ts_ms(1795514400, "at")
    for bad, message in [
        (1795514400, "ts: must be an RFC 3339 string"),
        ("yesterday", "ts: 'yesterday' is not an RFC 3339 time"),
        ("2026-11-24T10:00:00", "ts: must carry a timezone (e.g. 2026-11-24T10:00:00.000Z)"),
        ("0001-01-01T00:00+23:59", "ts: '0001-01-01T00:00+23:59' is out of range (years 1 to 9999 in UTC)"),
    ]:
        refused(base(ts=bad), message)
    first = ms_to_ts(packing.MIN_TS_MS)
    assert validate_and_pack(base(ts=first), NOW_MS)[2] == packing.MIN_TS_MS == 946_684_800_000
    before = ms_to_ts(packing.MIN_TS_MS - 1)
    refused(base(ts=before), f"ts: {before} is before 2000: the device's clock is not set")


def test_the_future_ends_at_the_allowed_skew() -> None:
    assert packing.MAX_FUTURE_SKEW_MS == 300_000
    edge = ms_to_ts(NOW_MS + 300_000)
    assert validate_and_pack(base(ts=edge), NOW_MS)[2] == NOW_MS + 300_000
    late = ms_to_ts(NOW_MS + 300_001)
    refused(
        base(ts=late),
        f"ts: {late} is 5 min ahead of the server's clock (at most 5 min allowed): check the device's "
        "clock (NTP)",
    )
    ahead = ms_to_ts(NOW_MS + 119_999)
    refused(
        base(ts=ahead),
        f"ts: {ahead} is 119 s ahead of the server's clock (at most 0 s allowed): check the device's "
        "clock (NTP)",
        max_future_ms=0,
    )
    ahead = ms_to_ts(NOW_MS + 7_199_000)
    refused(
        base(ts=ahead),
        f"ts: {ahead} is 119 min ahead of the server's clock (at most 2 min allowed): check the device's "
        "clock (NTP)",
        max_future_ms=120_000,
    )
    ahead = ms_to_ts(NOW_MS + 7_200_000 + 3_540_000)
    refused(
        base(ts=ahead),
        f"ts: {ahead} is 2 h 59 min ahead of the server's clock (at most 2 h 0 min allowed): check the "
        "device's clock (NTP)",
        max_future_ms=7_200_000,
    )
    # without a clock given, the server's own
    now = int(time.time() * 1000)
    assert validate_and_pack(base(ts=ms_to_ts(now)))[2] == now
    with pytest.raises(SampleError, match=r"ahead of the server's clock"):
        validate_and_pack(base(ts=ms_to_ts(now + 86_400_000)))
