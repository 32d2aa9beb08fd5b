"""Properties: no byte stream crashes the request parser or the responder; good requests are never lost."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackingbms.daly.a5 import Frame, checksum
from trackingbms.sim import RequestParser

from .conftest import make_pack, request

PACK = make_pack(cells=16, sensors=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_parser_never_raises_and_only_returns_checked_requests(chunks: list[bytes]) -> None:
    parser = RequestParser(64)
    for chunk in chunks:
        for req in parser.feed(chunk):
            assert len(req) == 13 and req[0] == 0xA5 and req[3] == 8 and checksum(req[:12]) == req[12]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0x90, 0x91, 0x93, 0x95, 0x98, 0x50, 0x62]), min_size=1, max_size=5),
    st.binary(max_size=12).filter(lambda b: 0xA5 not in b),
    st.integers(min_value=1, max_value=13),
)
def test_requests_split_anyhow_after_junk_are_all_found(ids: list[int], junk: bytes, cut: int) -> None:
    stream = junk + b"".join(request(i) for i in ids)
    parser = RequestParser(64)
    found = []
    for k in range(0, len(stream), cut):
        found += parser.feed(stream[k : k + cut])
    assert [r[2] for r in found] == ids


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 255), st.integers(0, 255), st.binary(min_size=8, max_size=8))
def test_any_checked_request_gets_a_valid_reply_or_silence(
    address: int, data_id: int, payload: bytes
) -> None:
    body = bytes((0xA5, address, data_id, 8)) + payload
    for emission in PACK.respond(body + bytes((checksum(body),))):
        frame = Frame.from_bytes(emission.data)
        assert frame.address == 1 and frame.data_id == data_id
