"""The Bluetooth payload format (docs/ble.md): round trips of every message kind through fragments at any
MTU, the 16S size promise, and clear errors for bytes that are not a message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackingbms.gateway.ble import codec
from trackingbms.gateway.ble.codec import (
    PayloadError,
    Reassembler,
    Request,
    Response,
    decode_reading,
    decode_request,
    decode_response,
    encode_reading,
    encode_request,
    encode_response,
    fragment,
)
from trackingbms.model import SOURCES, STATES, Sample, format_ts

# values on the format's grid (the wire's resolution): what a Daly BMS can report
ms = st.integers(min_value=0, max_value=(1 << 48) - 1)
text = st.text(max_size=40)
optional = {
    "source": st.sampled_from(SOURCES),
    "voltage_v": st.integers(0, 65535).map(lambda n: n / 100),
    "current_a": st.integers(-32768, 32767).map(lambda n: n / 10),
    "soc_pct": st.integers(0, 1000).map(lambda n: n / 10),
    "remaining_ah": st.integers(0, 2**32 - 1).map(lambda n: n / 1000),
    "cycles": st.integers(0, 65535),
    "state": st.sampled_from(STATES),
    "charge_mos": st.booleans(),
    "discharge_mos": st.booleans(),
    "charger_connected": st.booleans(),
    "load_connected": st.booleans(),
    "fault_code": st.integers(0, 255),
    "cells_mv": st.lists(st.integers(0, 65535), max_size=48),
    "temps_c": st.lists(st.integers(-40, 215).map(float), max_size=16),
    "balancing": st.lists(st.integers(1, 48), max_size=48),
    "faults": st.lists(st.text(min_size=1, max_size=30), max_size=6),
    "errors": st.dictionaries(st.text(max_size=10), st.text(max_size=60), max_size=3),
}


@st.composite
def samples(draw: st.DrawFn) -> dict[str, Any]:
    s: dict[str, Any] = {"seq": draw(st.integers(0, (1 << 48) - 1))}
    from datetime import UTC, datetime

    s["ts"] = format_ts(datetime.fromtimestamp(draw(st.integers(0, 253402300799999)) / 1000, UTC))
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        s[name] = draw(optional[name])
    return s


mtus = st.integers(min_value=23, max_value=517)


def through_fragments(message: bytes, mtu: int) -> bytes:
    r = Reassembler()
    out = [m for f in fragment(message, mtu) if (m := r.feed(f)) is not None]
    assert len(out) == 1 and r.dropped == 0
    for f in fragment(message, mtu):
        assert len(f) <= mtu - 3  # what a notification / write can carry at this MTU
    return out[0]


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 254), sample=samples(), mtu=mtus)
def test_readings_round_trip_through_fragments(index: int, sample: dict[str, Any], mtu: int) -> None:
    message = encode_reading(index, sample)
    assert decode_reading(through_fragments(message, mtu)) == (index, sample)


@settings(max_examples=150, deadline=None)
@given(
    request=st.one_of(
        st.builds(
            Request, command=st.just(codec.CMD_INFO), request_id=st.integers(0, 255), pairing_code=text
        ),
        st.builds(
            Request,
            command=st.just(codec.CMD_HISTORY),
            request_id=st.integers(0, 255),
            args=st.fixed_dictionaries(
                {"battery": st.integers(0, 255), "from_seq": ms, "max_count": st.integers(0, 255)}
            ),
        ),
        st.builds(
            Request,
            command=st.just(codec.CMD_GET_READING),
            args=st.fixed_dictionaries({"battery": st.integers(0, 255)}),
        ),
        st.builds(
            Request,
            command=st.just(codec.CMD_SET_UPLINK),
            pairing_code=text,
            args=st.fixed_dictionaries({"name": text, "url": text}),
        ),
        st.builds(
            Request,
            command=st.just(codec.CMD_SET_WIFI),
            pairing_code=text,
            args=st.fixed_dictionaries({"ssid": text, "psk": text}),
        ),
        st.builds(
            Request,
            command=st.just(codec.CMD_SET_POLL),
            pairing_code=text,
            args=st.fixed_dictionaries(
                {"battery": st.integers(0, 255), "interval_ms": st.integers(0, 2**32 - 1)}
            ),
        ),
    ),
    mtu=mtus,
)
def test_requests_round_trip(request: Request, mtu: int) -> None:
    assert decode_request(through_fragments(encode_request(request), mtu)) == request


infos = st.fixed_dictionaries(
    {
        "device": text,
        "version": text,
        "uplink": st.one_of(st.none(), st.text(min_size=1, max_size=10)),
        "queue_depth": st.integers(0, 2**32 - 1),
        "wifi_settable": st.booleans(),
        "uplinks": st.lists(st.fixed_dictionaries({"name": text, "url": text}), max_size=3),
        "batteries": st.lists(
            st.fixed_dictionaries(
                {
                    "battery_id": st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
                    "link_state": st.sampled_from(codec.LINK_STATES),
                    "poll_interval_s": st.integers(0, 2**32 - 1).map(lambda n: n / 1000),
                    "oldest_seq": ms,
                    "next_seq": ms,
                }
            ),
            max_size=4,
        ),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    response=st.one_of(
        st.builds(Response, request_id=st.integers(0, 255), command=st.just(codec.CMD_INFO), body=infos),
        st.builds(
            Response,
            request_id=st.integers(0, 255),
            command=st.just(codec.CMD_HISTORY),
            body=st.fixed_dictionaries(
                {
                    "battery": st.integers(0, 254),
                    "more": st.booleans(),
                    "next_seq": ms,
                    "samples": st.lists(samples(), max_size=4),
                }
            ),
        ),
        st.builds(
            Response,
            request_id=st.integers(0, 255),
            command=st.just(codec.CMD_GET_READING),
            body=st.fixed_dictionaries({"battery": st.integers(0, 254), "sample": samples()}),
        ),
        st.builds(
            Response,
            request_id=st.integers(0, 255),
            command=st.sampled_from(sorted(codec.COMMAND_NAMES)),
            status=st.sampled_from(sorted(set(codec.STATUS_NAMES) - {codec.OK})),
            message=text,
        ),
    ),
    mtu=mtus,
)
def test_responses_round_trip(response: Response, mtu: int) -> None:
    message = encode_response(response)
    if len(message) > codec.max_message(mtu):
        with pytest.raises(PayloadError, match="fragments"):
            fragment(message, mtu)
        return
    assert decode_response(through_fragments(message, mtu)) == response


def sixteen_s() -> dict[str, Any]:
    return Sample(
        battery_id="pack-1",
        seq=1_764_000_000_000,
        ts="2026-11-30T15:00:00.123Z",
        source="a5-uart",
        voltage_v=53.2,
        current_a=-12.3,
        soc_pct=76.5,
        remaining_ah=76.512,
        cycles=42,
        state="discharging",
        charge_mos=True,
        discharge_mos=True,
        charger_connected=False,
        load_connected=True,
        cells_mv=[3325 + i for i in range(16)],
        temps_c=[21.0, 22.0, 23.0, 24.0],
        balancing=[],
        faults=[],
        fault_code=0,
    ).to_wire()


def test_a_16s_reading_fits_one_notification_at_mtu_77_and_four_at_the_default() -> None:
    wire = sixteen_s()
    message = encode_reading(0, wire)
    assert len(message) == 73  # the size docs/ble.md states
    assert len(fragment(message, 77)) == 1
    parts = fragment(message, codec.DEFAULT_MTU)
    assert len(parts) == 4 and [p[0] for p in parts] == [0x80, 0x81, 0x82, 0x03]
    wire.pop("battery_id")
    assert decode_reading(message) == (0, wire)


def test_lost_and_interleaved_fragments_drop_the_message_not_the_stream() -> None:
    a = fragment(encode_reading(0, sixteen_s()), 23)
    r = Reassembler()
    assert [r.feed(f) for f in a[:2] + a[3:]] == [None, None, None]  # fragment 2 lost
    assert r.dropped == 1
    assert decode_reading(next(m for f in a if (m := r.feed(f)) is not None))[0] == 0  # the next one whole
    r2 = Reassembler()
    r2.feed(a[0])
    r2.feed(a[1])
    r2.feed(a[0])  # a new message starts: the half one is dropped
    assert r2.dropped == 1


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "cut short"),
        (b"\x02\x01", "format version 2"),
        (b"\x01\x11\x00", "cut short"),
        (bytes([1, 1, 0]) + bytes(12) + b"\xff\xff", "unknown fields"),
    ],
)
def test_bad_bytes_are_one_line_errors(message: bytes, match: str) -> None:
    with pytest.raises(PayloadError, match=match) as info:
        if message[1:2] == b"\x11":
            decode_response(message)
        else:
            decode_reading(message)
    assert "\n" not in str(info.value)


def test_values_the_format_cannot_carry_are_refused() -> None:
    with pytest.raises(PayloadError):
        encode_reading(0, {"seq": 1, "ts": "2026-11-30T15:00:00.000Z", "voltage_v": 700.0})
    with pytest.raises(PayloadError):
        encode_reading(0, {"seq": 1, "ts": "2026-11-30T15:00:00.000Z", "temps_c": [-50.0]})
