"""Battery physics and BMS logic: determinism, coulomb counting, drift, protections that trip and recover,
ageing knobs, scenarios and schedules. Protections are read back via 0x98 / 0x93 with the project's codec."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackingbms.sim import PackConfig, SimConfigError

from .conftest import decode, make_pack, request


def test_same_seed_same_run_different_seed_different_pack() -> None:
    runs = []
    for seed in (7, 7, 8):
        pack = make_pack(scenario="ebike-ride", seed=seed)
        pack.advance(4000)
        runs.append(pack.truth())
    assert runs[0] == runs[1]
    assert runs[0]["cells"] != runs[2]["cells"]


def test_result_does_not_depend_on_how_time_is_sliced() -> None:
    one = make_pack(scenario="solar-day", seed=2)
    one.advance(6 * 3600)
    many = make_pack(scenario="solar-day", seed=2)
    for _ in range(360):
        many.advance(60)
    assert one.truth() == many.truth()


def test_solar_day_24h_at_high_speed() -> None:
    # a whole simulated day is computed on demand (no sleeping): it must finish within the test timeout
    pack = make_pack(scenario="solar-day", cells=16, soc_pct=50)
    pack.advance(24 * 3600)
    t = pack.truth()
    assert t["sim_time_s"] == 24 * 3600
    assert t["charge_ah"] > 30 and t["discharge_ah"] > 30  # the sun charged it, the house drained it
    assert t["time"].startswith("2026-06-22T00:00")


def test_coulomb_counting_matches_the_charge_that_flowed() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-10.0, soc_pct=80, capacity_spread_pct=0)
    before = pack.truth()
    pack.advance(3600)
    after = pack.truth()
    assert after["discharge_ah"] == pytest.approx(10.0, rel=1e-6)
    drop_pct = before["soc_pct"] - after["soc_pct"]
    assert drop_pct == pytest.approx(10.0 / before["capacity_ah"] * 100, rel=0.01)
    # terminal voltage below OCV while discharging (V = OCV + I·R with I < 0)
    assert all(c["voltage_mv"] < c["ocv_mv"] for c in after["cells"])


def test_charging_raises_the_terminal_voltage() -> None:
    pack = make_pack(scenario="constant", constant_current_a=30.0, soc_pct=50)
    pack.advance(10)
    assert all(c["voltage_mv"] > c["ocv_mv"] for c in pack.truth()["cells"])
    assert decode(pack, 0x93).state == "charging"
    assert decode(pack, 0x90).current_a > 29


def test_reported_soc_drifts_away_from_the_truth_on_small_currents() -> None:
    # 2 A is below the 2.5 A the BMS counts: the true SOC falls, the reported one does not move
    pack = make_pack(scenario="constant", constant_current_a=-2.0, soc_pct=70)
    pack.advance(10 * 3600)
    t = pack.truth()
    assert t["soc_pct"] < 51
    assert t["bms_soc_pct"] == 70.0
    assert decode(pack, 0x90).soc_pct == 70.0


def test_reported_soc_has_gain_error() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-20.0, soc_pct=90, current_gain_error_pct=3)
    pack.advance(3 * 3600)
    t = pack.truth()
    true_drop = 90 - t["soc_pct"]
    reported_drop = 90 - t["bms_soc_pct"]
    assert reported_drop > true_drop  # the shunt reads 3 % high


def test_temperature_rises_with_current() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-90.0, soc_pct=95, ambient_c=20)
    pack.advance(3000)
    t = pack.truth()
    assert t["pack_temp_c"] > 22
    assert min(t["temps_c"]) >= 20
    assert max(decode(pack, 0x96).temps_c) > 21


def test_cell_overvoltage_trips_at_l2_opens_charge_mos_and_recovers_with_hysteresis(tmp_path: Path) -> None:
    # charge at 30 A until the BMS cuts off, rest, then discharge until the protection releases
    schedule = tmp_path / "s.toml"
    schedule.write_text(
        "[[step]]\nat_s = 0\ncurrent_a = 30\n"
        "[[step]]\nat_s = 7200\ncurrent_a = 0\n"
        "[[step]]\nat_s = 9000\ncurrent_a = -30\n"
    )
    pack = make_pack(scenario="schedule", schedule=schedule, soc_pct=85)
    th = pack.battery.th
    tripped_at = None
    for _ in range(7200 // 30):
        pack.advance(30)
        if "cell_voltage_high_l2" in pack.truth()["faults"]:
            tripped_at = pack.truth()
            break
    assert tripped_at is not None, "charging to full never tripped the cell over-voltage protection"
    assert tripped_at["bms_soc_pct"] == 100.0  # the BMS recalibrates at the top
    faults = decode(pack, 0x98)
    assert "cell_voltage_high_l2" in faults.faults
    mos = decode(pack, 0x93)
    assert (mos.charge_mos, mos.discharge_mos) == (False, True)
    assert decode(pack, 0x90).current_a == 0.0  # the charger is cut off
    pack.advance(9000 - tripped_at["sim_time_s"] - 10)
    # resting full: still above the release voltage, still cut off (no chattering)
    assert "cell_voltage_high_l2" in pack.truth()["faults"]
    assert max(decode(pack, 0x95).cells_mv) < th.cell_ov_mv[1]
    pack.advance(600)  # discharging lowers the cells below L2 − hysteresis
    t = pack.truth()
    assert "cell_voltage_high_l2" not in t["faults"] and t["charge_mos"]
    assert decode(pack, 0x93).charge_mos
    assert max(decode(pack, 0x95).cells_mv) < th.cell_ov_mv[1] - th.cell_hyst_mv


def test_undervoltage_opens_discharge_mos_and_charging_recovers() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-50.0, soc_pct=8)
    for _ in range(200):
        pack.advance(30)
        if not pack.truth()["discharge_mos"]:
            break
    t = pack.truth()
    assert "cell_voltage_low_l2" in t["faults"]
    assert t["current_a"] == 0.0 and t["bms_soc_pct"] == 0.0
    assert "cell_voltage_low_l2" in decode(pack, 0x98).faults
    assert not decode(pack, 0x93).discharge_mos
    # a charger brings it back
    pack.battery.scenario.current_a = 20.0  # type: ignore[attr-defined]
    pack.advance(1800)
    assert pack.truth()["discharge_mos"] and "cell_voltage_low_l2" not in pack.truth()["faults"]


def test_overcurrent_trips_and_releases_after_the_delay() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-160.0, soc_pct=80)  # L2 = 1.5 C = 150 A
    t = pack.truth()
    assert "discharge_overcurrent_l2" in t["faults"] and not t["discharge_mos"] and t["current_a"] == 0.0
    assert "discharge_overcurrent_l2" in decode(pack, 0x98).faults
    pack.battery.scenario.current_a = -120.0  # type: ignore[attr-defined]  # L1 (100 A) < 120 A < L2
    pack.advance(20)
    assert "discharge_overcurrent_l2" in pack.truth()["faults"]  # held for the release delay (~32 s)
    pack.advance(20)
    t = pack.truth()
    assert "discharge_overcurrent_l2" not in t["faults"] and t["discharge_mos"]
    assert "discharge_overcurrent_l1" in t["faults"] and t["current_a"] == -120.0


def test_cold_blocks_charging_but_not_discharging() -> None:
    pack = make_pack(scenario="constant", constant_current_a=20.0, ambient_c=-5)
    t = pack.truth()
    assert "charge_temp_low_l2" in t["faults"]
    assert not t["charge_mos"] and t["discharge_mos"] and t["current_a"] == 0.0
    assert "charge_temp_low_l2" in decode(pack, 0x98).faults


def test_heat_blocks_charging_first_then_discharging() -> None:
    pack = make_pack(scenario="constant", constant_current_a=20.0, ambient_c=61)
    t = pack.truth()
    assert {"charge_temp_high_l2", "discharge_temp_high_l1"} <= set(t["faults"])
    assert "discharge_temp_high_l2" not in t["faults"]
    assert not t["charge_mos"] and t["discharge_mos"]
    hot = make_pack(scenario="constant", constant_current_a=-20.0, ambient_c=66)
    t = hot.truth()
    assert "discharge_temp_high_l2" in t["faults"] and not t["discharge_mos"] and t["current_a"] == 0.0
    assert "discharge_temp_high_l2" in decode(hot, 0x98).faults


def test_low_reported_soc_warns() -> None:
    pack = make_pack(soc_pct=8)
    assert "soc_low_l1" in pack.truth()["faults"] and "soc_low_l2" not in pack.truth()["faults"]
    pack.respond(request(0x21, 0x40, bytes(6) + (30).to_bytes(2, "big")))  # the BMS now says 3.0 %
    assert decode(pack, 0x90).soc_pct == 3.0
    pack.advance(5)
    assert {"soc_low_l1", "soc_low_l2"} <= set(decode(pack, 0x98).faults)
    assert pack.truth()["discharge_mos"]  # a SOC alarm warns, it does not cut off


def test_pack_overvoltage_and_cell_delta_bits() -> None:
    pack = make_pack(scenario="constant", constant_current_a=-5.0, cell_uv_mv=(3300, 2500), soc_pct=40)
    t = pack.truth()
    assert "cell_voltage_low_l1" in t["faults"] and t["discharge_mos"]  # a warning does not cut off
    bits = decode(pack, 0x98).faults
    assert "cell_voltage_low_l1" in bits and "cell_voltage_low_l2" not in bits


def test_balancing_bleeds_the_high_cells_and_shows_in_0x97() -> None:
    pack = make_pack(scenario="constant", constant_current_a=5.0, soc_pct=97, soc_spread_pct=1.5, seed=4)
    pack.advance(60)
    t = pack.truth()
    balancing = [c["cell"] for c in t["cells"] if c["balancing"]]
    assert balancing, "a pack near full with spread should balance"
    assert decode(pack, 0x97).balancing == balancing
    lowest = min(c["voltage_mv"] for c in t["cells"])
    assert all(t["cells"][n - 1]["voltage_mv"] - lowest > 30 for n in balancing)


def test_weak_cell_self_discharges_faster() -> None:
    pack = make_pack(weak_cell=5, weak_cell_self_discharge_x=30, soc_pct=80, soc_spread_pct=0, step_s=60)
    pack.advance(20 * 86400)
    cells = pack.truth()["cells"]
    weak = cells[4]
    others = [c for c in cells if c["cell"] != 5]
    assert weak["self_discharge_pct_month"] > 10 * max(c["self_discharge_pct_month"] for c in others)
    assert weak["soc_pct"] < min(c["soc_pct"] for c in others) - 20
    assert decode(pack, 0x91).min_cell_no == 5


def test_ageing_knobs_show_in_the_truth() -> None:
    fresh = make_pack(seed=9).truth()
    aged = make_pack(seed=9, capacity_fade_pct=20, resistance_growth_pct=50).truth()
    assert aged["capacity_ah"] == pytest.approx(fresh["capacity_ah"] * 0.8, rel=1e-3)
    assert aged["soh_pct"] == pytest.approx(fresh["soh_pct"] * 0.8, rel=1e-3)
    assert aged["resistance_mohm"] == pytest.approx(
        sum(c["resistance_mohm"] for c in aged["cells"]), rel=1e-3
    )
    for f, a in zip(fresh["cells"], aged["cells"], strict=True):
        assert a["resistance0_mohm"] == pytest.approx(f["resistance0_mohm"] * 1.5, rel=1e-3)


def test_cycles_count_and_fade_per_cycle() -> None:
    pack = make_pack(
        scenario="ebike-ride", soc_pct=100, fade_per_cycle_pct=1.0, capacity_ah=20, cycles=10, step_s=15
    )
    start_capacity = pack.truth()["capacity_ah"]
    pack.advance(3 * 86400)
    t = pack.truth()
    assert t["cycles"] > 10 and t["cycles"] == 10 + int(t["equivalent_cycles"])
    assert decode(pack, 0x94).cycles == t["cycles"]
    assert t["capacity_ah"] < start_capacity


@pytest.mark.parametrize(
    ("chemistry", "low", "high"), [("lfp", 3000, 3500), ("nmc", 3400, 4200), ("lto", 2000, 2700)]
)
def test_chemistries_have_their_own_voltages(chemistry: str, low: int, high: int) -> None:
    pack = make_pack(chemistry=chemistry, cells=12, soc_pct=50)
    cells = decode(pack, 0x95).cells_mv
    assert len(cells) == 12 and all(low < mv < high for mv in cells)
    assert decode(pack, 0x53).battery_type == {"lfp": 0, "nmc": 1, "lto": 2}[chemistry]


@pytest.mark.parametrize("cells", [3, 4, 17, 48])
def test_cell_counts(cells: int) -> None:
    pack = make_pack(cells=cells, sensors=16)
    assert len(decode(pack, 0x95).cells_mv) == cells
    assert len(decode(pack, 0x96).temps_c) == 16


def test_schedule_csv_and_repeat(tmp_path: Path) -> None:
    csv_file = tmp_path / "s.csv"
    csv_file.write_text("# a comment\nat_s,current_a,ambient_c\n0,-10,30\n600,5,\n")
    pack = make_pack(scenario="schedule", schedule=csv_file)
    assert pack.truth()["current_a"] == -10.0 and pack.truth()["ambient_c"] == 30.0
    pack.advance(700)
    assert pack.truth()["current_a"] == 5.0 and pack.truth()["ambient_c"] == 25.0
    toml_file = tmp_path / "r.toml"
    toml_file.write_text(
        "repeat = true\n[[step]]\nat_s = 0\ncurrent_a = -4\n[[step]]\nat_s = 100\ncurrent_a = 4\n"
    )
    pack = make_pack(scenario="schedule", schedule=toml_file)
    pack.advance(250)  # period 200 s: back in the first step
    assert pack.truth()["current_a"] == -4.0


@pytest.mark.parametrize(
    ("content", "suffix", "words"),
    [
        ("at_s,current_a\n0,abc\n", ".csv", "needs numeric"),
        ("at_s,current_a\n10,1\n5,1\n", ".csv", "increase strictly"),
        ("[[step]]\nat_s = 0\n", ".toml", "needs numeric"),
        ("not toml [", ".toml", "schedule"),
        ("", ".toml", "no steps"),
        ("x", ".txt", "must be a .toml or .csv"),
    ],
)
def test_bad_schedules_are_clear_errors(tmp_path: Path, content: str, suffix: str, words: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(SimConfigError, match=words):
        make_pack(scenario="schedule", schedule=path)


def test_missing_schedule_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SimConfigError, match="cannot read schedule"):
        make_pack(scenario="schedule", schedule=tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cells": 2}, "cells must be 3–48"),
        ({"cells": 49}, "cells must be 3–48"),
        ({"chemistry": "lead"}, "chemistry"),
        ({"scenario": "moon"}, "unknown scenario"),
        ({"scenario": "schedule"}, "needs a schedule"),
        ({"weak_cell": 17}, "weak_cell"),
        ({"soc_pct": 101}, "soc_pct"),
        ({"speed": 0}, "speed"),
    ],
)
def test_bad_pack_config_is_a_clear_error(kwargs: dict, words: str) -> None:
    with pytest.raises(SimConfigError, match=words):
        PackConfig(**kwargs)


def test_bundled_example_schedules_load_by_name() -> None:
    day = make_pack(scenario="schedule", schedule=Path("workshop-day"))
    day.advance(8 * 3600)  # 08:00: tools running
    assert day.truth()["current_a"] == -35.0
    day.advance(24 * 3600)  # repeats every 24 h
    assert day.truth()["current_a"] == -35.0
    pulse = make_pack(scenario="schedule", schedule=Path("pulse-test.csv"))
    pulse.advance(630)
    assert pulse.truth()["current_a"] == -50.0
    with pytest.raises(SimConfigError, match="bundled examples: pulse-test, workshop-day"):
        make_pack(scenario="schedule", schedule=Path("no-such-day"))


def test_schedule_period_must_cover_the_steps(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "repeat = true\nperiod_s = 50\n"
        "[[step]]\nat_s = 0\ncurrent_a = 1\n"
        "[[step]]\nat_s = 60\ncurrent_a = 2\n"
    )
    with pytest.raises(SimConfigError, match="period_s"):
        make_pack(scenario="schedule", schedule=path)
