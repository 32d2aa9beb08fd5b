"""Simulator knobs analytics is validated with: sensor noise and dead band, BMS SOC error, a weak cell's
extra self-discharge, the UPS profile, and the recorder's samples."""

from __future__ import annotations

import pytest

from trackingbms.model import Sample
from trackingbms.sim.battery import Battery
from trackingbms.sim.config import PackConfig, SimConfigError
from trackingbms.sim.record import Recorder


def test_current_noise_and_deadband() -> None:
    quiet = Battery(PackConfig(scenario="constant", constant_current_a=-10, seed=2))
    noisy = Battery(PackConfig(scenario="constant", constant_current_a=-10, seed=2, current_noise_a=0.5))
    readings_quiet, readings_noisy = set(), set()
    for _ in range(50):
        quiet.step(5)
        noisy.step(5)
        readings_quiet.add(round(quiet.measured_current_a(), 3))
        readings_noisy.add(round(noisy.measured_current_a(), 3))
    assert len(readings_quiet) == 1 and len(readings_noisy) > 20
    small = Battery(PackConfig(scenario="constant", constant_current_a=0.4, current_deadband_a=0.5))
    assert small.measured_current_a() == 0.0 and small.current_a == pytest.approx(0.4)


def test_bms_soc_error_and_weak_cell_rate() -> None:
    b = Battery(
        PackConfig(soc_pct=50, bms_soc_error_pct=20, weak_cell=3, weak_cell_extra_self_discharge_pct_month=5)
    )
    truth = b.truth()
    assert truth["bms_soc_pct"] == pytest.approx(70.0)
    rates = [c["self_discharge_pct_month"] for c in truth["cells"]]
    others = sorted(r for k, r in enumerate(rates) if k != 2)
    median = (
        (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2
        if len(others) % 2 == 0
        else others[len(others) // 2]
    )
    assert rates[2] - median == pytest.approx(5.0, abs=1e-3)  # over the pack's median cell, exactly
    # healthy cells: the chemistry's 3 %/month within 2σ of a 15 % spread (matched cells)
    assert all(3.0 * 0.7 - 1e-3 <= r <= 3.0 * 1.3 + 1e-3 for r in others)
    assert max(others) - min(others) > 0.3
    with pytest.raises(SimConfigError, match="bms_soc_error_pct"):
        PackConfig(bms_soc_error_pct=120)


def test_ups_float_tails_off_then_an_outage_discharges() -> None:
    rec = Recorder(PackConfig(scenario="ups", chemistry="lfp", soc_pct=90, seed=2, step_s=60))
    samples = list(rec.run(4 * 86400, 60))
    currents = [s["current_a"] for s in samples]
    assert currents[0] == pytest.approx(10.0, abs=0.5)  # 0.1 C until the float voltage
    assert 0.0 in currents[: 6 * 60]  # tailed off to nothing within hours
    assert min(currents) == pytest.approx(-40.0, abs=1.0)  # an outage at 0.4 C
    assert max(max(s["cells_mv"]) for s in samples) < 3600  # the CV charger never trips the BMS


def test_recorded_samples_are_valid_wire_samples() -> None:
    rec = Recorder(PackConfig(scenario="solar-day", seed=4, step_s=30))
    samples = list(rec.run(3600, 30))
    assert len(samples) == 121 and [s["seq"] for s in samples[:3]] == [1, 2, 3]
    for s in samples[::20]:
        Sample.model_validate(s)
    assert rec.truth()["sim_time_s"] == 3600
