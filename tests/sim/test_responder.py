"""The A5 responder: every reply is a valid frame, decodes (with trackingbms.daly) to the simulator's state,
and matches real captured frames byte for byte where the state matches (reference §2, daly-frames.json)."""

from __future__ import annotations

import itertools
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackingbms.daly.a5 import checksum
from trackingbms.sim import Quirks, RequestParser, SimConfigError, parse_faults
from trackingbms.sim.responder import SUPPORTED_IDS

from .conftest import ask, decode, make_pack, request

FRAMES_JSON = Path("/work/shared/reference/daly-frames.json")
LOCAL_FRAMES = Path(__file__).parent.parent / "daly" / "daly-frames.json"


def reference_frames() -> list[dict]:
    path = LOCAL_FRAMES if LOCAL_FRAMES.exists() else FRAMES_JSON
    if not path.exists():
        pytest.skip("daly-frames.json not found")
    return json.loads(path.read_text())


def captured(hex_prefix: str) -> bytes:
    for entry in reference_frames():
        if entry["direction"] == "response" and entry["hex"].startswith(hex_prefix):
            return bytes.fromhex(entry["hex"])
    raise AssertionError(f"no captured frame starting {hex_prefix}")


READ_IDS = sorted(i for i in SUPPORTED_IDS if i not in (0xD9, 0xDA, 0x21, 0x00))


@pytest.mark.parametrize("data_id", READ_IDS, ids=lambda i: f"0x{i:02X}")
def test_every_read_is_answered_with_valid_numbered_frames(data_id: int) -> None:
    pack = make_pack(cells=16, sensors=4)
    frames = ask(pack, data_id)  # Frame.from_bytes checks start, length byte and checksum
    assert frames
    assert all(f.address == 1 and f.data_id == data_id for f in frames)
    if len(frames) > 1 or data_id in (0x95, 0x96, 0x57, 0x62, 0x63):
        assert [f.frame_no for f in frames] == list(range(1, len(frames) + 1))  # 1-based, in order


def test_answers_decode_to_the_simulated_state() -> None:
    pack = make_pack(cells=16, sensors=4, scenario="ebike-ride", seed=3, soc_pct=80)
    pack.advance(1800)  # mid-ride: discharging at about 0.3 C
    b = pack.battery
    truth = pack.truth()

    status = decode(pack, 0x90)
    assert status.voltage_v == pytest.approx(sum(b.cells_mv()) / 1000, abs=0.051)
    assert status.voltage_v == pytest.approx(truth["voltage_v"], abs=0.1)
    assert status.current_a == pytest.approx(truth["measured_current_a"], abs=0.051)
    assert status.current_a < -20  # discharging, in the Sample convention
    assert status.soc_pct == pytest.approx(truth["bms_soc_pct"], abs=0.051)

    cells = decode(pack, 0x95).cells_mv
    assert cells == b.cells_mv()
    assert cells == pytest.approx([c["voltage_mv"] for c in truth["cells"]], abs=0.51)
    rng = decode(pack, 0x91)
    assert (rng.max_cell_mv, rng.min_cell_mv) == (max(cells), min(cells))
    assert cells[rng.max_cell_no - 1] == max(cells) and cells[rng.min_cell_no - 1] == min(cells)

    temps = decode(pack, 0x96).temps_c
    assert temps == truth["temps_c"]
    tr = decode(pack, 0x92)
    assert (tr.max_temp_c, tr.min_temp_c) == (max(temps), min(temps))

    mos = decode(pack, 0x93)
    assert (mos.state, mos.charge_mos, mos.discharge_mos) == ("discharging", True, True)
    assert mos.remaining_ah == pytest.approx(truth["bms_soc_pct"] / 100 * 100, abs=0.01)

    info = decode(pack, 0x94)
    assert (info.cell_count, info.temp_sensor_count) == (16, 4)
    assert (info.charger_connected, info.load_connected) == (False, True)
    assert info.cycles == truth["cycles"]

    assert decode(pack, 0x97).balancing == [c["cell"] for c in truth["cells"] if c["balancing"]]
    faults = decode(pack, 0x98)
    assert faults.faults == truth["faults"] and faults.fault_code == 0

    rated = decode(pack, 0x50)
    assert (rated.rated_capacity_ah, rated.nominal_cell_mv) == (100.0, 3200)
    board = decode(pack, 0x51)
    assert (board.boards, board.cells_per_board[0], board.ntc_per_board[0]) == (1, 16, 4)
    cumulative = decode(pack, 0x52)
    assert (cumulative.cumulative_charge_ah, cumulative.cumulative_discharge_ah) == (
        round(truth["charge_ah"]),
        round(truth["discharge_ah"]),
    )
    assert cumulative.cumulative_discharge_ah > 0  # the pack has been discharging
    assert decode(pack, 0x53).battery_type == 0  # LiFePO4
    assert decode(pack, 0x57).serial.startswith("TBMS-LFP-16S100AH")
    assert decode(pack, 0x62).software_version
    assert decode(pack, 0x63).hardware_version == "DL-SIM-16S100A"
    assert decode(pack, 0x61).rtc == "2026-06-21T00:30:00"


def test_thresholds_decode_to_the_protection_settings() -> None:
    pack = make_pack(cells=16, chemistry="lfp", capacity_ah=100)
    th = pack.battery.th
    assert decode(pack, 0x59).fields() == {
        "cell_high_l1_mv": th.cell_ov_mv[0], "cell_high_l2_mv": th.cell_ov_mv[1],
        "cell_low_l1_mv": th.cell_uv_mv[0], "cell_low_l2_mv": th.cell_uv_mv[1],
    }  # fmt: skip
    pack_v = decode(pack, 0x5A).fields()
    assert (pack_v["pack_high_l2_v"], pack_v["pack_low_l2_v"]) == (th.pack_ov_v[1], th.pack_uv_v[1])
    oc = decode(pack, 0x5B).fields()
    assert (oc["charge_overcurrent_l2_a"], oc["discharge_overcurrent_l2_a"]) == (100.0, 150.0)
    temps = decode(pack, 0x5C).fields()
    assert (temps["charge_temp_high_l2_c"], temps["discharge_temp_low_l2_c"]) == (60, -20)
    assert decode(pack, 0x5D).fields()["soc_low_l2_pct"] == 5.0
    assert decode(pack, 0x5E).fields()["cell_diff_l2_mv"] == th.cell_diff_mv[1]
    assert decode(pack, 0x5F).fields() == {"balance_start_mv": 3400, "balance_diff_mv": 30}


# ---- byte for byte against real captures ---------------------------------------------------------


def _pin(pack, *, cells_mv=None, temp_c=None, current_a=None, soc_pct=None) -> None:
    """Put the simulated pack in the state a capture was taken in (the sim's own state, no mocks)."""
    b = pack.battery
    if cells_mv is not None:
        for c, mv in zip(b.cells, cells_mv, strict=True):
            c.voltage_mv = mv
    if temp_c is not None:
        b.temp_c = b.ambient_c = temp_c
        b.sensor_offset_c = [0.0] * len(b.sensor_offset_c)
    if current_a is not None:
        b.current_a = current_a
    if soc_pct is not None:
        b.bms_soc_pct = soc_pct


def _exact_pack(cells: int, sensors: int, **config):
    pack = make_pack(cells=cells, sensors=sensors, current_gain_error_pct=0, current_offset_a=0, **config)
    return pack


def test_status_chain_with_stale_bytes_matches_capture() -> None:
    # mpp-solar: 0x90 → 0x91 → 0x92 in a row; 0x91's reserved bytes are 0x90's SOC, 0x92's are 0x91's tail
    pack = _exact_pack(16, 1)
    cells = [3326] + [3327] * 13 + [3328, 3327]  # 53.2 V, max #15 3.328 V, min #1 3.326 V
    _pin(pack, cells_mv=cells, temp_c=15, current_a=-2.1, soc_pct=88.8)
    assert ask(pack, 0x90, 0x80)[0].to_bytes() == captured("a5019008021400007545037889")
    assert ask(pack, 0x91, 0x80)[0].to_bytes() == captured("a50191080d000f0cfe010378e1")
    assert ask(pack, 0x92, 0x80)[0].to_bytes() == captured("a501920837013701fe0103782a")


def test_status_info_matches_capture() -> None:
    pack = _exact_pack(16, 1, cycles=3)
    pack.responder.stale[7] = 0x40  # left from an earlier reply on the real unit
    assert ask(pack, 0x94, 0x80)[0].to_bytes() == captured("a5019408100100000000034096")


def test_mos_status_matches_capture() -> None:
    pack = _exact_pack(16, 1, capacity_ah=200)
    _pin(pack, current_a=0.0, soc_pct=86.38)
    pack.responder.heartbeat = 0x99  # the counter moves on by one per reply
    assert ask(pack, 0x93, 0x80)[0].to_bytes() == captured("a50193080001019a0002a2d859")


def test_cell_burst_host_0x80_matches_capture_all_16_frames() -> None:
    capture = captured("a5019508010cfd0cfe0cfe40a1")
    cells = [3325, 3326, 3326, 3326, 3326, 3326, 3326, 3326, 3326, 3326, 3324, 3326, 3326, 3327, 3326, 3324]
    pack = _exact_pack(16, 1)
    _pin(pack, cells_mv=cells)
    pack.responder.stale[7] = 0x40
    burst = b"".join(f.to_bytes() for f in ask(pack, 0x95, 0x80))
    assert burst == capture and len(burst) == 16 * 13


def test_temperature_burst_host_0x80_matches_capture() -> None:
    pack = _exact_pack(16, 1)
    _pin(pack, temp_c=15)
    burst = b"".join(f.to_bytes() for f in ask(pack, 0x96, 0x80))
    assert burst == captured("a501960801370000000000007ca5019608020000000000000046")


def test_discharge_mos_write_reply_carries_stale_cells_like_capture() -> None:
    # python-daly-bms#3: the D9 reply's bytes 1–7 are what the previous (0x95) reply left in the buffer
    pack = _exact_pack(3, 1)
    _pin(pack, cells_mv=[0x0D13, 0x0D21, 0x0D17])
    pack.responder.stale[7] = 0xC0
    ask(pack, 0x95)
    on = ask(pack, 0xD9, 0x40, b"\x01")[0].to_bytes()
    assert on == captured("a501d908010d130d210d17c0ba")
    off = ask(pack, 0xD9, 0x40, b"\x00")[0].to_bytes()
    assert off == captured("a501d908000d130d210d17c0b9")


def test_board_config_and_short_circuit_payloads_match_captures() -> None:
    pack = _exact_pack(14, 1)
    assert ask(pack, 0x51)[0].payload == bytes.fromhex("010e000001000000")
    assert ask(_exact_pack(14, 1), 0x60)[0].payload == bytes.fromhex("0258014d00000000")  # nothing stale yet


# ---- frame count policy, addresses, sign, heartbeat, stale bytes -----------------------------------


@pytest.mark.parametrize(
    ("cells", "sensors", "frames", "address", "n95", "n96"),
    [
        (16, 4, "auto", 0x40, 6, 1),
        (16, 4, "auto", 0x80, 16, 2),
        (48, 16, "auto", 0x40, 16, 3),
        (7, 8, "auto", 0x80, 16, 3),
        (16, 4, "needed", 0x80, 6, 1),
        (16, 4, "all", 0x40, 16, 3),
        (3, 1, "auto", 0x40, 1, 1),
    ],
)
def test_frame_count_policy(cells: int, sensors: int, frames: str, address: int, n95: int, n96: int) -> None:
    pack = make_pack(Quirks(latency_s=0, baud=0, frames=frames), cells=cells, sensors=sensors)  # type: ignore[arg-type]
    cell_frames = ask(pack, 0x95, address)
    assert len(cell_frames) == n95
    assert len(ask(pack, 0x96, address)) == n96
    needed = math.ceil(cells / 3)
    # frames past the cells are zero-filled; decoding truncated to the cell count gives the cells
    assert all(f.payload[1:7] == bytes(6) for f in cell_frames[needed:])
    assert decode(pack, 0x95, address).cells_mv == pack.battery.cells_mv()


def test_host_address_policy_and_board_numbers() -> None:
    only_40 = make_pack(Quirks(latency_s=0, baud=0, hosts="0x40"))
    assert ask(only_40, 0x90, 0x40) and not ask(only_40, 0x90, 0x80)
    only_80 = make_pack(Quirks(latency_s=0, baud=0, hosts="0x80"))
    assert ask(only_80, 0x90, 0x80) and not ask(only_80, 0x90, 0x40)
    board3 = make_pack(Quirks(latency_s=0, baud=0, board=3))
    assert not ask(board3, 0x90, 0x40)
    reply = ask(board3, 0x90, 0x42)
    assert reply and reply[0].address == 3


def test_current_sign_knob() -> None:
    exact = {"current_gain_error_pct": 0, "current_offset_a": 0}
    normal = make_pack(scenario="constant", constant_current_a=-25.0, **exact)
    inverted = make_pack(
        Quirks(latency_s=0, baud=0, invert_current=True),
        scenario="constant", constant_current_a=-25.0, current_gain_error_pct=0, current_offset_a=0,
    )  # fmt: skip
    raw_normal = ask(normal, 0x90)[0].payload[4:6]
    raw_inverted = ask(inverted, 0x90)[0].payload[4:6]
    assert int.from_bytes(raw_normal, "big") == 30250  # A5 default: above 30000 = discharging
    assert int.from_bytes(raw_inverted, "big") == 29750
    assert decode(normal, 0x90).current_a == -25.0
    assert decode(inverted, 0x90, invert_current=True).current_a == -25.0


def test_heartbeat_counts_and_can_be_switched_off() -> None:
    pack = make_pack()
    beats = [ask(pack, 0x93)[0].payload[3] for _ in range(5)]
    assert len(set(beats)) == 5 and all((b - a) % 256 == 1 for a, b in itertools.pairwise(beats))
    still = make_pack(Quirks(latency_s=0, baud=0, heartbeat=False))
    assert {ask(still, 0x93)[0].payload[3] for _ in range(3)} == {0}


def test_stale_bytes_knob() -> None:
    stale = make_pack(soc_pct=88.8)
    ask(stale, 0x90)
    assert ask(stale, 0x91)[0].payload[6:8] == (888).to_bytes(2, "big")
    clean = make_pack(Quirks(latency_s=0, baud=0, stale_bytes=False), soc_pct=88.8)
    ask(clean, 0x90)
    assert ask(clean, 0x91)[0].payload[6:8] == b"\x00\x00"


def test_stale_cell_slots_knob_fills_unused_slots_from_the_previous_frame() -> None:
    pack = make_pack(Quirks(latency_s=0, baud=0, stale_cell_slots=True), cells=16)
    frames = ask(pack, 0x95)
    assert frames[5].payload[3:7] == frames[4].payload[3:7] != bytes(4)
    assert decode(pack, 0x95).cells_mv == pack.battery.cells_mv()  # truncated to the cell count


def test_wire_timing_of_a_burst() -> None:
    pack = make_pack(Quirks(latency_s=0.06, baud=9600), cells=16)
    delays = [e.delay_s for e in pack.respond(request(0x95, 0x80))]
    frame_s = 13 * 10 / 9600
    # request wire time + latency, then one frame time per frame
    assert delays == pytest.approx([frame_s + 0.06 + (k + 1) * frame_s for k in range(16)])


def test_unknown_ids_and_wrong_lengths_get_no_answer() -> None:
    pack = make_pack()
    assert pack.respond(request(0x99)) == []
    assert pack.respond(request(0xE1)) == []


# ---- writes ------------------------------------------------------------------------------------


def test_mosfet_writes_really_switch() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-20.0)
    assert ask(pack, 0xD9, 0x40, b"\x00")[0].payload[0] == 0
    mos = decode(pack, 0x93)
    assert (mos.charge_mos, mos.discharge_mos) == (True, False)
    assert pack.truth()["current_a"] == 0.0  # the load is cut off at once
    soc = pack.truth()["soc_pct"]
    pack.advance(600)
    assert pack.truth()["soc_pct"] == pytest.approx(soc, abs=0.01)
    assert ask(pack, 0xDA, 0x80, b"\x00")[0].payload[0] == 0
    assert not decode(pack, 0x93).charge_mos
    ask(pack, 0xD9, 0x40, b"\x01")
    ask(pack, 0xDA, 0x40, b"\x01")
    mos = decode(pack, 0x93)
    assert (mos.charge_mos, mos.discharge_mos) == (True, True)
    assert pack.truth()["current_a"] == -20.0


def test_soc_write_really_sets_the_reported_soc_and_the_clock() -> None:
    pack = make_pack(soc_pct=60)
    real = bytes.fromhex("a5402108160c0d151d27012cc3")  # diysolarforum capture: 30.0 %, 2022-12-13 21:29:39
    reply = pack.respond(real)
    assert reply and reply[0].data[4] == 1
    assert decode(pack, 0x90).soc_pct == 30.0
    assert decode(pack, 0x93).remaining_ah == 30.0
    assert decode(pack, 0x61).rtc == "2022-12-13T21:29:39"
    assert pack.truth()["soc_pct"] == pytest.approx(60, abs=2)  # the truth does not move
    zero_date = request(0x21, 0x40, bytes(6) + (755).to_bytes(2, "big"))
    pack.respond(zero_date)
    assert decode(pack, 0x90).soc_pct == 75.5


def test_reset_reenables_mosfets() -> None:
    pack = make_pack()
    ask(pack, 0xD9, 0x40, b"\x00")
    ask(pack, 0xDA, 0x40, b"\x00")
    reply = ask(pack, 0x00)
    assert reply and reply[0].data_id == 0x00
    mos = decode(pack, 0x93)
    assert mos.charge_mos and mos.discharge_mos


# ---- request parsing ---------------------------------------------------------------------------


def test_request_parser_resyncs_and_ignores_bad_requests() -> None:
    good = request(0x90)
    bad_sum = good[:12] + bytes(((good[12] + 1) & 0xFF,))
    bad_len = bytearray(good)
    bad_len[3] = 0x09
    bad_len[12] = checksum(bad_len[:12])
    parser = RequestParser(64)
    assert parser.feed(b"\x00\xff" + bad_sum) == []
    assert parser.feed(bytes(bad_len)) == []
    assert parser.feed(good[:5]) == []
    assert parser.feed(good[5:] + b"\x12") == [good]
    assert parser.feed(good) == [good]  # the stray byte before it is skipped
    # a padded, oversized request (dbus-serialbattery#397) is ignored as a whole
    assert parser.feed(good + bytes(200)) == []
    assert parser.feed(good) == [good]


# ---- configuration errors -----------------------------------------------------------------------


def test_parse_faults() -> None:
    q = parse_faults("loss=0.01, sleep_after=3600,echo=0,hosts=0x40,frames=all,baud=19200,invert_current=yes")
    assert (q.loss, q.sleep_after_s, q.echo_when_asleep, q.hosts, q.frames, q.baud, q.invert_current) == (
        0.01, 3600.0, False, "0x40", "all", 19200, True,
    )  # fmt: skip
    for bad, words in [
        ("los=1", "unknown fault 'los'"),
        ("loss=2", "probability"),
        ("loss", "key=value"),
        ("echo=maybe", "boolean"),
        ("baud=fast", "needs a int"),
        ("hosts=0x20", "hosts must be"),
        ("sleep_after=0", "sleep_after"),
    ]:
        with pytest.raises(SimConfigError, match=words):
            parse_faults(bad)


def test_rtc_starts_at_the_configured_start() -> None:
    pack = make_pack(start=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    pack.advance(60)
    assert decode(pack, 0x61).rtc == "2025-01-02T03:05:05"


def test_replies_counted_per_command_and_retries_told_apart() -> None:
    """What the gateway's kill test counts: readings the BMS gave out = replies − repeats of a request."""
    pack = make_pack()
    ask(pack, 0x90)
    ask(pack, 0x90)  # the same request again straight away: a client's retry
    ask(pack, 0x93)
    ask(pack, 0x90)  # a new poll
    pack.asleep = True
    ask(pack, 0x90)  # ignored: not a reply
    pack.wake()
    ask(pack, 0x90)  # the first answer after silence is not a repeat
    assert pack.replies_by_id == {"0x90": 4, "0x93": 1}
    assert pack.repeats_by_id == {"0x90": 1}
    assert pack.truth()["wire"]["replies_by_id"] == {"0x90": 4, "0x93": 1}
    assert pack.stats["replies"] == 5 and pack.stats["echoes"] + pack.stats["ignored"] == 1
