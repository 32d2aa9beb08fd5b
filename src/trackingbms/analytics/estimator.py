"""One streaming health estimator per battery: capacity / SOH, DC resistance, SOC, weak cells.

Feed it samples (wire dicts, see ``trackingbms.model``) in time order with :meth:`BatteryEstimator.update`;
ask :meth:`BatteryEstimator.health` at any time; save with :meth:`to_state` (plain JSON) and resume with
:meth:`from_state`: a resumed estimator gives exactly what an uninterrupted one would. Pure: no I/O,
no clock (time is the samples' ``ts``).

Methods, and where they come from:

* **Anchors** (where the SOC is known without counting): a rest (current at most 5 % of C and steady for
  ``rest_min_s``) whose cell voltages sit on a steep part of the OCV curve (:mod:`.ocv`). A rest at the top
  knee is a *full-charge anchor* (highest cell at the knee, current tailed off): the synchronisation
  point Victron shunts use and batmon-ha ``doc/SoH.md`` proposes after its loose-gate replay scattered SOH
  between 70 % and 122 %. Quasi-rests under a small steady load are corrected by I·R per cell.
* **Capacity / SOH**: charge counted between a rest's exit and a later rest's entry (so days spent at
  rest, where Daly's dead band hides the current, stay out of the count), divided by each cell's SOC
  change; segments need a swing of ``min_swing`` and a counting uncertainty (dead band × time shown as
  0 A, plus the offset's uncertainty × time) under ``max_count_error`` of the charge. Per cell the median
  of its segments; the pack's capacity is its weakest cell's (the first to empty). Balancing bleed is
  added back per cell. The current-sensor offset is estimated from the closure error of full-to-full
  cycles (a cycle between two top-knee rests has a known net charge) and removed from every reading.
* **DC resistance**: Deming regression of voltage steps on current steps between consecutive samples
  (batmon-ha ``bmslib/impedance.py``: Deming, since the current is noisy too and least squares reads low),
  over windows gated on excitation, sample spacing, SOC drift and r²; differencing consecutive samples
  removes the OCV drift within a window. Each window is tagged with its temperature and normalised to
  25 °C (``r_temp_coeff_per_c``); the result is the median of recent windows, pack and per cell.
* **SOC**: coulomb counting re-anchored at every anchor; the BMS's own SOC is compared with it
  (Daly ignores small currents and drifts 20–30 %, batmon-ha#144) and a ``trackingbms set --soc``
  correction is suggested when they disagree.
* **Weak cells**: at anchors each cell's SOC (from its rest voltage through the OCV curve where it is steep)
  is linked to the same cell's at the previous anchor of the same charge level (a chain per level: the
  next hour of a rest, the top of the next float or charge); over each link the cell's change is taken
  against the trimmed mean of the cells' changes (a reference finer than one 1 mV step), with what is not
  self-discharge taken out: the balancing bleed (Daly's flags, held until the next sample like the
  current; its scale, the inverse of a capacity known only within the fade range, fitted across the pack
  by weighted least squares since healthy cells' rates do not follow the bleed) and a cell's capacity
  mismatch (κ, fitted as its deviation against the pack's SOC, since links at equal counted charge drift
  with the count); and an anchor feeds the links only once the cells' mean voltage holds still as far as
  the count says it should (a CC-CV tail hidden in Daly's dead band lifts the fullest cells by I·R at the
  start of a float). The self-discharge rate is the pooled least-squares slope over the chains against the
  pack's median cell, with an error that counts the correlated residuals of quantised readings and the
  unknown position inside the 1 mV step at each end; a cell is flagged by a sequential test re-taken at
  each report: the lower one-sided 95 % confidence bound of its excess (at the least alarming bleed
  scale) past 1.5 %/month, both halves of the record falling, and a robust z against the other cells. The
  approach is the pseudo-OCV comparison of arXiv 2506.13394 (20–80 mV micro-shorts found in 10 of 10
  field cases) made to work at Daly's 1 mV resolution; it is written here because no library does
  cell-vs-pack drift on quantised BMS data with a passive balancer in the loop. A cell whose capacity is
  well under the median diverges at both knees; a cell whose resistance is well above the median
  deviates in proportion to current. Each finding names the 1-based cell and carries its evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from statistics import median
from typing import Any

import numpy as np

from trackingbms.analytics.ocv import CURVES, MIN_SLOPE_MV_PER_PCT, guess_chemistry
from trackingbms.analytics.regression import deming, deming_columns

STATE_VERSION = 4
_DAY_S = 86400.0
_MONTH_S = 30 * _DAY_S
#: a rest voltage at the very end of the engine's curve: the cell may be past it (clipped)
CLIPPED_SOC = 0.999


@dataclass
class EstimatorConfig:
    """Gates and assumptions; every figure has a unit in its name."""

    #: rated capacity; None = read from the BMS (remaining_ah / soc_pct)
    rated_capacity_ah: float | None = None
    #: lfp, nmc, lto; None = guessed from the first cell voltages
    chemistry: str | None = None
    #: Daly shows 0.0 A inside this band (A); the engine's counting uncertainty while it reads 0
    deadband_a: float = 0.2
    #: 1-sigma noise of a current reading (A), for the Deming error ratio
    current_noise_a: float = 0.1
    #: passive balancing current (A) of the board, added back to a cell while it is flagged balancing
    balance_current_a: float = 0.05
    rest_current_c: float = 0.05
    rest_min_s: float = 1800.0
    #: a gap longer than this between samples breaks counting (no segment spans it)
    max_gap_s: float = 300.0
    min_swing: float = 0.3
    #: a capacity needs this many segments per cell (batmon-ha: single segments ranged 117–381 Ah)
    min_segments: int = 2
    max_count_error: float = 0.03
    max_segment_s: float = 10 * _DAY_S
    # resistance windows
    window_s: float = 300.0
    max_spacing_s: float = 10.0
    min_pairs: int = 10
    #: root of the summed squared current steps in a window, as a fraction of C
    min_excitation_c: float = 0.1
    max_window_soc_drift: float = 0.03
    min_r2: float = 0.8
    r_temp_coeff_per_c: float = 0.02
    min_windows: int = 3
    r_soc_range_pct: tuple[float, float] = (15.0, 85.0)
    resistance_days: float = 7.0
    #: hourly points of the resistance trend kept (30 days)
    resistance_history_points: int = 720
    #: points of a weak cell's offset plotted as evidence, at most
    evidence_points: int = 120
    # weak cells
    #: healthy cells matched for one pack differ by under ~1 %/month (sim/config.py): a cell is flagged
    #: once the lower confidence bound of its excess over the pack passes this (%/month)
    self_discharge_flag_pct_month: float = 1.5
    #: standard errors between the rate and that lower bound (one-sided 95 %)
    drift_confidence_z: float = 1.645
    drift_min_span_s: float = 24 * 3600.0
    #: the pack's SOC must swing this far (% SOC) over the observations before a cell's κ is fitted
    drift_kappa_min_swing_pct: float = 20.0
    #: each half of the record must fall at least this share of the whole record's rate
    drift_min_half_share: float = 0.2
    drift_days: float = 7.0
    drift_max_dq_c: float = 0.02
    drift_max_link_s: float = 36 * 3600.0
    #: floor of the cells' spread of drift rates (%/month) in the robust z-score
    drift_noise_pct_month: float = 0.5
    drift_min_z: float = 3.0
    #: cells this close to the highest, when it reads past the curve's end, count as possibly clipped
    clip_band_mv: float = 5.0
    #: a cell marked clipped that reads this far under full at the next anchor (and at the mark, by the
    #: count) was not clipped
    clip_check_margin_pct: float = 2.0
    #: an anchor feeds the drift test only once the cells' mean voltage moved at most this far (as % SOC
    #: through the curve's slope) past what the charge counted since the rest's previous reading explains:
    #: a current hidden in the dead band (a CC-CV tail) still lifts each cell by I·R, the fullest most
    drift_settle_pct: float = 0.02
    #: plus this share of the charge counted over the same time (the count's gain is known to a few %)
    drift_settle_count_share: float = 0.05
    #: before a capacity is measured, the bleed added back may be a share of a capacity this far under
    #: the rated one (fade); once one is measured, within ``bleed_capacity_unc`` of it
    bleed_max_fade: float = 0.3
    bleed_capacity_unc: float = 0.05
    #: residuals of quantised readings are correlated: one independent point per this much observed time
    drift_corr_s: float = 6 * 3600.0
    low_capacity_ratio: float = 0.9
    high_resistance_ratio: float = 1.5
    #: suggest correcting the BMS's SOC beyond this disagreement (points)
    soc_suggest_pct: float = 5.0
    #: how fast a BMS's own count can plausibly wander from ours (points per hour since the anchor: a 1 %
    #: current-gain error at 1 C, or a 0.5 A offset on a 50 Ah pack); beyond it the two counts disagree in
    #: rate (a wrong rated capacity in the BMS, samples whose clock is not the pack's), and setting the SOC
    #: would not fix that
    soc_rate_tolerance_pct_per_h: float = 1.0
    #: without a capacity estimate, SOC is given only this far (fraction of rated) from its anchor
    soc_uncounted_c: float = 0.1


@dataclass
class Finding:
    """Something an operator should know, with the figures it rests on."""

    #: weak_cell_self_discharge | weak_cell_low_capacity | weak_cell_high_resistance | soc_drift |
    #: soc_rate_mismatch
    kind: str
    severity: str  # info | warning
    message: str
    cell: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _epoch_s(ts: Any) -> float:
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    if isinstance(ts, datetime):
        return ts.timestamp()
    return float(ts) / 1000.0  # epoch ms (the server's storage key)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BatteryEstimator:
    """The streaming estimator of one battery. See the module docstring."""

    def __init__(self, config: EstimatorConfig | None = None, *, battery_id: str | None = None) -> None:
        self.cfg = config or EstimatorConfig()
        self.battery_id = battery_id
        self.chemistry: str | None = self.cfg.chemistry
        self.rated_ah: float | None = self.cfg.rated_capacity_ah
        self.n_cells = 0
        self.samples = 0
        self.skipped = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.i_last = 0.0  # corrected current of the last sample (flows until the next one)
        self.raw_i_last = 0.0
        self.q_ah = 0.0  # net charge counted since the start (corrected), chained while no gap
        self.zero_h = 0.0  # hours the current read 0 (inside the dead band)
        self.nonzero_h = 0.0
        self.chain = 0  # bumps at every gap: nothing is counted across one
        self.obs_epoch = 0  # bumps at gaps: drift links stay within one epoch
        self.offset_a = 0.0
        self.offset_estimates: list[float] = []
        self.bleed_ah: list[float] = []  # per cell, balancing bleed since the start
        self.balancing_last: list[int] = []  # cells the last sample flagged balancing (1-based)
        self.bms_soc: float | None = None
        self.bms_remaining_ah: float | None = None
        # rest tracking
        self.rest_since: float | None = None
        self.rest_i = 0.0
        self.rest_entry: dict[str, Any] | None = None  # anchor at the moment the rest qualified
        self.rest_last: dict[str, Any] | None = None  # latest anchor of the current rest
        #: [cells' mean mV, q_ah, t] at the rest's start, then at its latest anchor: has the voltage settled?
        self.rest_ref: list[float] | None = None
        self.next_obs_t = 0.0
        self.last_exit: dict[str, Any] | None = None  # exit anchor of the previous qualifying rest
        self.last_full_exit: dict[str, Any] | None = None
        self.full_anchors = 0
        self.rest_anchors = 0
        self.soc_anchor: dict[str, Any] | None = None
        # capacity segments: per cell lists of Ah
        self.cell_caps: list[list[float]] = []
        self.segments: list[dict[str, Any]] = []
        self.cell_spread_mv: int | None = None  # at the last anchor (a rest: no I·R in it)
        self.cap_est: float | None = None  # _pack_capacity(), kept current by _segment
        self.cap_median: float | None = None  # the median cell's: what moves the mean SOC per Ah
        # self-discharge observations: [t, [adjusted deviation % per cell or None]]
        self.observations: list[list[Any]] = []
        #: per cell, how many charging samples read it at or above the curve's end (a cell clipped full
        #: stores less than the pack counts: its deviation across a clip is not self-discharge)
        self.clips: list[int] = []
        #: per cell, clip samples not yet checked against the next reading, and the count at the last one
        self.clip_pending: list[int] = []
        self.clip_q_ah: list[float] = []
        self.clip_mv: float | None = None
        # resistance
        self.win: list[list[Any]] = []  # [t, i, cells, temp]
        self.win_start: float | None = None
        self.win_exc = 0.0  # sum of squared current steps in the window (A²)
        self.r_windows: list[list[Any]] = []  # [t, temp_c, r25_pack, [r25 per cell]]
        #: the pack figure (25 °C) once per hour that had a window: the trend an operator plots
        self.r_history: list[list[float]] = []  # [hour start t, r25_pack mΩ, windows behind it]

    # ---- ingest ------------------------------------------------------------------------------------
    def update(self, sample: dict[str, Any], t: float | None = None) -> None:
        """One sample, in time order (older or repeated ``ts`` are counted in ``skipped`` and ignored).
        ``t``: its time in epoch seconds when the caller has parsed ``ts`` already (the server has)."""
        if t is None:
            t = _epoch_s(sample["ts"])
        t_last = self.t_last
        if t_last is not None and t <= t_last:
            self.skipped += 1
            return
        self.samples += 1
        raw_i = sample.get("current_a")
        cells = sample.get("cells_mv")
        soc = sample.get("soc_pct")
        if soc is not None:
            self.bms_soc = soc
            rem = sample.get("remaining_ah")
            if rem is not None and soc >= 20:
                self.bms_remaining_ah = rem * 100 / soc
        cfg = self.cfg
        # count the current that flowed since the last sample (it held until now)
        if t_last is None:
            self.t_first = t
        else:
            dt = t - t_last
            if dt > cfg.max_gap_s:
                self._break_chain()
            else:
                h = dt / 3600
                self.q_ah += self.i_last * h
                if self.raw_i_last == 0:
                    self.zero_h += h
                else:
                    self.nonzero_h += h
                if self.bleed_ah and self.balancing_last:
                    # the balancer bled the cells the last sample flagged, as the current held until now
                    bleed = cfg.balance_current_a * h
                    for c in self.balancing_last:
                        if 0 < c <= len(self.bleed_ah):
                            self.bleed_ah[c - 1] += bleed
        self.balancing_last = sample.get("balancing") or []
        self.t_last = t
        if raw_i is None:
            # a partial sample: we cannot count what we did not see
            self.raw_i_last = 0.0
            self.i_last = 0.0
            self._break_chain()
            return
        i = raw_i - self.offset_a if raw_i != 0 else 0.0
        self.raw_i_last, self.i_last = raw_i, i
        if not cells:
            return
        if not self.n_cells:
            self._first_cells(cells)
        elif len(cells) != self.n_cells:
            return
        cap = self._capacity_ref()
        top_mv = max(cells)
        if top_mv >= self.clip_mv:  # type: ignore[operator]
            # the highest cells at the very end of the curve are full and may be clipped there (charge
            # counted that they did not store): their deviation across this moment is not self-discharge.
            # Only those within a few mV of the highest: under charge the I·R lifts every cell past the
            # curve's end, and a self-discharging cell is a low one anyway
            floor_mv, clips = top_mv - cfg.clip_band_mv, self.clips
            for k, mv in enumerate(cells):
                if mv >= floor_mv:
                    clips[k] += 1
                    self.clip_pending[k] += 1
                    self.clip_q_ah[k] = self.q_ah
        # ---- rest tracking
        if abs(i) <= cfg.rest_current_c * cap and (
            self.rest_since is None or abs(i - self.rest_i) <= 0.02 * cap
        ):
            if self.rest_since is None:
                self.rest_since, self.rest_i = t, i
                self.rest_ref = [sum(cells) / len(cells), self.q_ah, t]
            elif t - self.rest_since >= cfg.rest_min_s:
                if self.rest_last is None or t >= self.next_obs_t:
                    self._rest_anchor(t, i, cells)
                elif self.rest_last is not None and raw_i == 0:
                    # nothing flows (as far as the sensor tells): the anchor holds until the rest ends;
                    # under a small load the SOCs would go stale against the count, so it stays put
                    self.rest_last["t"] = t
                    self.rest_last["zero_h"] = self.zero_h
                    self.rest_last["nonzero_h"] = self.nonzero_h
                    self.rest_last["q"] = self.q_ah
        elif self.rest_since is not None:
            self._rest_end()
        # ---- resistance window
        win = self.win
        if win:
            last = win[-1]
            if t - last[0] > cfg.max_spacing_s:
                self._close_window()
                win = self.win
                self.win_start = t
            else:
                d = raw_i - last[1]
                self.win_exc += d * d
        else:
            self.win_start = t
        win.append([t, raw_i, cells, sample.get("temps_c"), self.q_ah])
        if t - self.win_start >= cfg.window_s:  # type: ignore[operator]
            self._close_window()

    def set_profile(self, chemistry: str | None, rated_capacity_ah: float | None) -> None:
        """The battery's chemistry and rated capacity as its admin set them (the server's battery profile).
        None keeps the guessed chemistry / takes the BMS's capacity. A change applies from now on: what
        was measured on the old curve stays (set the profile when the battery is registered)."""
        if chemistry is not None and chemistry != self.chemistry:
            self.chemistry = chemistry
            if self.n_cells:
                self.clip_mv = CURVES[chemistry].table[-1][1]
        self.rated_ah = rated_capacity_ah

    def update_run(self, samples: Sequence[tuple[float, dict[str, Any]]]) -> None:
        """:meth:`update` over ``(t, sample)`` pairs in order, with the same result bit for bit (the same
        float operations in the same order), faster: the server feeds runs of a battery's samples.

        Why hand-written: per sample :meth:`update` reads and writes some twenty attributes, a third of
        the alarm service's CPU at ingest. Here the common sample (the current and every cell read, no
        gap, no cell at the curve's end, no rest anchor due, the resistance window not broken by a
        spacing; a rest may start or end) runs with the state in locals; any other sample is handed to
        :meth:`update` itself, the locals written back before and read again after.
        tests/analytics/test_estimator_run.py compares the saved states of both over simulated packs."""
        cfg = self.cfg
        max_gap_s, max_spacing_s, window_s = cfg.max_gap_s, cfg.max_spacing_s, cfg.window_s
        rest_c, rest_min_s, balance_a = cfg.rest_current_c, cfg.rest_min_s, cfg.balance_current_a
        slow = self.update
        n = len(samples)
        k = 0
        while k < n:
            # (re)load the state the slow path or a closed window may have changed
            t_last, q_ah, zero_h, nonzero_h = self.t_last, self.q_ah, self.zero_h, self.nonzero_h
            i_last, raw_i_last, balancing_last = self.i_last, self.raw_i_last, self.balancing_last
            bms_soc, bms_rem = self.bms_soc, self.bms_remaining_ah
            n_samples, skipped = self.samples, self.skipped
            win, win_exc, win_start = self.win, self.win_exc, self.win_start
            n_cells, clip_mv, offset_a, bleed_ah = self.n_cells, self.clip_mv, self.offset_a, self.bleed_ah
            cap_fixed = self.cap_est or self.rated_ah
            rest_since, rest_i, rest_last, next_obs_t = (
                self.rest_since, self.rest_i, self.rest_last, self.next_obs_t,
            )  # fmt: skip
            close = False
            while k < n:
                t, s = samples[k]
                if t_last is not None and t <= t_last:
                    skipped += 1
                    k += 1
                    continue
                get = s.get
                raw_i = get("current_a")
                cells = get("cells_mv")
                if (
                    t_last is None
                    or t - t_last > max_gap_s
                    or raw_i is None
                    or not cells
                    or len(cells) != n_cells
                    or max(cells) >= clip_mv
                ):
                    break
                soc = get("soc_pct")
                rem = bms_rem
                if soc is not None:
                    r = get("remaining_ah")
                    if r is not None and soc >= 20:
                        rem = r * 100 / soc
                i = raw_i - offset_a if raw_i != 0 else 0.0
                cap = cap_fixed or rem or 100.0
                at_rest_zero = rest_starts = rest_ends = False
                if abs(i) <= rest_c * cap and (rest_since is None or abs(i - rest_i) <= 0.02 * cap):
                    if rest_since is None:
                        rest_starts = True
                    elif t - rest_since >= rest_min_s:
                        if rest_last is None or t >= next_obs_t:
                            break  # an anchor
                        at_rest_zero = raw_i == 0
                elif rest_since is not None:
                    rest_ends = True
                if win and t - win[-1][0] > max_spacing_s:
                    break  # the window closes on the spacing
                # the common sample: what update() does, in its order
                n_samples += 1
                if soc is not None:
                    bms_soc = soc
                    bms_rem = rem
                h = (t - t_last) / 3600
                q_ah += i_last * h
                if raw_i_last == 0:
                    zero_h += h
                else:
                    nonzero_h += h
                if bleed_ah and balancing_last:
                    bleed = balance_a * h
                    for c in balancing_last:
                        if 0 < c <= len(bleed_ah):
                            bleed_ah[c - 1] += bleed
                balancing_last = get("balancing") or []
                t_last = t
                raw_i_last, i_last = raw_i, i
                if at_rest_zero:
                    rest_last["t"] = t  # type: ignore[index]
                    rest_last["zero_h"] = zero_h  # type: ignore[index]
                    rest_last["nonzero_h"] = nonzero_h  # type: ignore[index]
                    rest_last["q"] = q_ah  # type: ignore[index]
                elif rest_starts:
                    rest_since, rest_i = t, i
                    self.rest_ref = [sum(cells) / len(cells), q_ah, t]
                elif rest_ends:
                    # _rest_end may fit the current offset from a full cycle (its capacity reference
                    # reads the BMS's remaining Ah): the offset then corrects the next samples
                    self.bms_remaining_ah = bms_rem
                    self._rest_end()
                    rest_since, rest_last, offset_a = None, None, self.offset_a
                if win:
                    d = raw_i - win[-1][1]
                    win_exc += d * d
                else:
                    win_start = t
                win.append([t, raw_i, cells, get("temps_c"), q_ah])
                k += 1
                if t - win_start >= window_s:
                    close = True
                    break
            self.t_last, self.q_ah, self.zero_h, self.nonzero_h = t_last, q_ah, zero_h, nonzero_h
            self.i_last, self.raw_i_last, self.balancing_last = i_last, raw_i_last, balancing_last
            self.bms_soc, self.bms_remaining_ah = bms_soc, bms_rem
            self.samples, self.skipped = n_samples, skipped
            self.win_exc, self.win_start = win_exc, win_start
            self.rest_since, self.rest_i = rest_since, rest_i
            if close:
                self._close_window()
            elif k < n:
                t, s = samples[k]
                slow(s, t)
                k += 1

    def _first_cells(self, cells: list[int]) -> None:
        self.n_cells = len(cells)
        self.bleed_ah = [0.0] * self.n_cells
        self.clips = [0] * self.n_cells
        self.clip_pending = [0] * self.n_cells
        self.clip_q_ah = [0.0] * self.n_cells
        self.cell_caps = [[] for _ in range(self.n_cells)]
        if self.chemistry is None:
            self.chemistry = guess_chemistry(cells)
        self.clip_mv = CURVES[self.chemistry].table[-1][1]

    def _capacity_ref(self) -> float:
        """The capacity the gates scale with: our estimate, else rated, else the BMS's, else 100 Ah."""
        return self.cap_est or self.rated_ah or self.bms_remaining_ah or 100.0

    def _break_chain(self) -> None:
        self.chain += 1
        self.obs_epoch += 1
        self.rest_since = None
        self.rest_entry = self.rest_last = None
        self.last_exit = None
        self.last_full_exit = None
        self.win = []

    # ---- anchors -----------------------------------------------------------------------------------
    def _cell_r_mohm(self) -> list[float] | None:
        recent = self.r_windows[-20:]
        if not recent:
            return None
        return [median(w[3][k] for w in recent) for k in range(self.n_cells)]

    def _rest_anchor(self, t: float, i: float, cells: list[int]) -> None:
        curve = CURVES[self.chemistry or "lfp"]
        cap = self._capacity_ref()
        r = self._cell_r_mohm() if i else None
        socs: list[float | None] = []
        res: list[float] = []  # % SOC per mV where each cell sits: the reading's resolution
        top = False
        for k, mv in enumerate(cells):
            ocv = mv - i * r[k] if r else mv
            if ocv >= curve.top_knee_mv:
                top = True
                if abs(i) > 0.01 * cap:
                    # polarisation grows at the top of the curve: I·R from mid-SOC windows is not enough
                    socs.append(None)
                    continue
            slope = curve.slope_mv_per_pct(ocv)
            if slope >= MIN_SLOPE_MV_PER_PCT:
                socs.append(curve.soc(ocv))
                res.append(1.0 / slope)
            else:
                socs.append(None)
        known = [s for s in socs if s is not None]
        self.cell_spread_mv = max(cells) - min(cells)
        anchor = {
            "t": t,
            "q": self.q_ah,
            "chain": self.chain,
            "zero_h": self.zero_h,
            "nonzero_h": self.nonzero_h,
            "socs": socs,
            "bleed": list(self.bleed_ah),
            "full": top,
        }
        self.next_obs_t = t + 3600.0
        if len(known) * 2 >= len(socs):
            self.soc_anchor = {
                "t": t,
                "q": self.q_ah,
                "chain": self.chain,
                "soc": sum(known) / len(known),
                "bms_soc": self.bms_soc,
            }
            self._check_clips(socs, cap)
            if self._settled(cells, curve, cap):
                self._observe(t, socs, median(res))
        if self.rest_entry is None and known:
            # the rest's first anchor that tells a SOC (a night on the LFP plateau reaches the knee late)
            self.rest_entry = anchor
            if known:
                if top:
                    self.full_anchors += 1
                else:
                    self.rest_anchors += 1
                self._segment(anchor)
        self.rest_last = anchor

    def _check_clips(self, socs: list[float | None], cap: float) -> None:
        """Take back the clips of cells that, by this reading and the charge counted since, were not full.

        Under charge I·R lifts the highest cells past the curve's end though they are short of full: on
        bench seed 1803 (NMC solar) the weak cell, 1.5 % over the pack, was marked clipped at every
        charge and cut from all its chains, and never got a rate. A cell that was full at its last clip
        sample reads, at the next anchor, at least ``100 % − charge taken out since``; one whose reading,
        and that reading plus the charge taken out, both sit ``clip_check_margin_pct`` under full was
        not full then. Only where little charge (``drift_max_dq_c`` of C) moved in between, and with a
        margin of 2 %: on bench seed 4038 (healthy LFP e-bike, 30 % faded) cells truly at 99.2 % were
        taken back with a 1 % margin and one then read 2.9 %/month fast — the top of the LFP curve needs
        the clip gate's protection beyond true clipping, which this check does not yet explain."""
        q, margin, limit = self.q_ah, self.cfg.clip_check_margin_pct, self.cfg.drift_max_dq_c * cap
        for k, pending in enumerate(self.clip_pending):
            if not pending:
                continue
            soc, out_ah = socs[k], self.clip_q_ah[k] - q
            if soc is not None and abs(out_ah) <= limit and 100 * max(soc, soc + out_ah / cap) < 100 - margin:
                self.clips[k] -= pending
            self.clip_pending[k] = 0

    def _settled(self, cells: list[int], curve: Any, cap: float) -> bool:
        """Whether the cells' voltages hold still at this anchor, as far as the count says they should.

        A current inside Daly's dead band reads 0 A yet still flows: at the start of a float the CC-CV
        tail (0.3–1 A on a 100 A h pack) lifts each cell by I·R, and the fullest cells most, their
        resistance rising steeply at the top. On seed 1005 of the bench that read the cells cut from
        their chains at each recharge (the fullest) +0.2 % SOC over the pack at the first anchor of the
        float; a stretch starting there falls back as the tail dies and read as 2 %/month of
        self-discharge on a healthy cell. The mean of the cells moves with that current (by I·R) and
        otherwise only with the charge counted, so a reading counts for drift only once the mean moved
        at most ``drift_settle_pct`` of SOC (through the curve), plus ``drift_settle_count_share`` of the
        charge counted, past that charge since the rest's start or its previous anchor (under a steady
        quasi-rest load the I·R is common to both ends and cancels). The SOC anchor itself is kept:
        0.2 % is nothing to a coulomb count."""
        mean_mv = sum(cells) / len(cells)
        ref, self.rest_ref = self.rest_ref, [mean_mv, self.q_ah, self.t_last]
        if ref is None:
            return False
        dq_ah = self.q_ah - ref[1]
        counted_pct = 0.0
        # inside the dead band the count is the sensor's noise (±0.5 A readings summed over an hour move
        # it by ~0.05 % SOC): nothing flows as far as the sensor can tell, so the mean must hold still
        if abs(dq_ah) * 3600 > self.cfg.deadband_a * (self.t_last - ref[2]):  # type: ignore[operator]
            counted_pct = 100 * dq_ah / cap
        moved_pct = 100 * (curve.soc(mean_mv) - curve.soc(ref[0]))
        # under a measured load the count is known to a few % (the sensor's gain, the mean cell's voltage
        # read through a piecewise curve): 3 % SOC moved in the hour of a solar night differs by ~0.1 %
        tolerance_pct = self.cfg.drift_settle_pct + self.cfg.drift_settle_count_share * abs(counted_pct)
        return abs(moved_pct - counted_pct) <= tolerance_pct

    def _rest_end(self) -> None:
        last = self.rest_last
        if last is not None and any(s is not None for s in last["socs"]):
            if last["full"] and self.last_full_exit is not None:
                self._offset_from_cycle(self.last_full_exit, last)
            self.last_exit = last
            if last["full"]:
                self.last_full_exit = last
        self.rest_since = None
        self.rest_entry = self.rest_last = None

    def _segment(self, entry: dict[str, Any]) -> None:
        """Capacity per cell from the previous rest's exit to this rest's entry."""
        prev = self.last_exit
        cfg = self.cfg
        if prev is None or prev["chain"] != entry["chain"] or entry["t"] - prev["t"] > cfg.max_segment_s:
            return
        dq = entry["q"] - prev["q"]
        err = 0.5 * cfg.deadband_a * (entry["zero_h"] - prev["zero_h"]) + self._offset_unc_a() * (
            entry["nonzero_h"] - prev["nonzero_h"]
        )
        if dq > -1e-6 or err > cfg.max_count_error * abs(dq):
            # discharge direction only: charge in carries the charging losses (and, at a clipped top,
            # charge the cells never stored), as Victron's and batmon-ha's discharged-Ah counts avoid
            return
        caps: list[float | None] = []
        for k, (s0, s1) in enumerate(zip(prev["socs"], entry["socs"], strict=True)):
            if s0 is None or s1 is None or abs(s1 - s0) < cfg.min_swing:
                caps.append(None)
                continue
            # the bleed took charge out of this cell that the pack current did not
            cell_dq = dq - (entry["bleed"][k] - prev["bleed"][k])
            cap = cell_dq / (s1 - s0)
            caps.append(cap if cap > 0 else None)
        if sum(c is not None for c in caps) * 2 < len(caps):
            return
        for k, c in enumerate(caps):
            if c is not None:
                self.cell_caps[k].append(c)
                del self.cell_caps[k][:-50]
        good = [c for c in caps if c is not None]
        self.cap_est = self._pack_capacity()
        known_caps = [c for c in self._cell_capacities() if c is not None]
        self.cap_median = median(known_caps) if self.cap_est is not None else None
        self.segments.append(
            {
                "from": _utc(prev["t"]),
                "to": _utc(entry["t"]),
                "ah": round(dq, 3),
                "capacity_ah": round(min(good), 3),
                "count_error_ah": round(err, 3),
            }
        )
        del self.segments[:-50]

    def _offset_unc_a(self) -> float:
        """Uncertainty of the offset: the dead band until full cycles pin it down, then their spread."""
        n = len(self.offset_estimates)
        if n < 2:
            return 0.05
        m = median(self.offset_estimates)
        return max(0.01, 1.4826 * median(abs(x - m) for x in self.offset_estimates) / math.sqrt(n))

    def _offset_from_cycle(self, a: dict[str, Any], b: dict[str, Any]) -> None:
        """Between two top-knee rests the net charge is known from the cells' SOC change: the
        remainder, spread over the time the current read non-zero, is the sensor's offset."""
        if a["chain"] != b["chain"]:
            return
        hours = b["nonzero_h"] - a["nonzero_h"]
        if hours < 2:
            return
        cap = self._capacity_ref()
        pairs = [
            (s0, s1) for s0, s1 in zip(a["socs"], b["socs"], strict=True) if s0 is not None and s1 is not None
        ]
        if len(pairs) * 2 < len(a["socs"]):
            return
        bleed = median(b["bleed"][k] - a["bleed"][k] for k in range(self.n_cells))
        expected = median(s1 - s0 for s0, s1 in pairs) * cap - bleed
        residual = (b["q"] - a["q"]) - expected
        # dead-band time is uncounted either way: only trust cycles where it cannot explain the residual
        if 0.5 * self.cfg.deadband_a * (b["zero_h"] - a["zero_h"]) > abs(residual) + 0.02 * cap:
            return
        self.offset_estimates.append(self.offset_a + residual / hours)
        del self.offset_estimates[:-20]
        if len(self.offset_estimates) >= 2:
            self.offset_a = median(self.offset_estimates)

    # ---- weak cells --------------------------------------------------------------------------------
    def _observe(self, t: float, socs: list[float | None], res_pct_per_mv: float) -> None:
        """Record each cell's SOC (%) with the charge counted and the balancing bleed (Ah) so far: only
        observations a little charge apart are compared, the bleed added back then (:meth:`_drift_rates`)."""
        # a cell read at either end of the curve is clipped there: it says nothing
        read = [
            None if s is None or not 1 - CLIPPED_SOC < s < CLIPPED_SOC else round(100 * s, 4) for s in socs
        ]
        self.observations.append(
            [
                t,
                self.q_ah,
                self.obs_epoch,
                read,
                round(res_pct_per_mv, 4),
                list(self.clips),
                [round(x, 6) for x in self.bleed_ah],
            ]
        )
        horizon = t - self.cfg.drift_days * _DAY_S
        while self.observations and self.observations[0][0] < horizon:
            self.observations.pop(0)
        del self.observations[:-400]

    def _drift_rates(self) -> list[dict[str, Any] | None]:
        """Per cell: how fast its SOC falls against the other cells' (%/month), and the bound the test uses.

        The balancing bleed is known in Ah; added back as SOC it is divided by a capacity that, before one
        is measured, lies between the rated one and ``1 - bleed_max_fade`` of it (then within
        ``bleed_capacity_unc`` of the measured one). Every cell's slope is linear in the inverse of that
        capacity, so it is computed at both ends of the range and the scale between them is fitted
        across the pack: the healthy cells' rates scatter around the pack's by ``drift_noise_pct_month``
        whatever the balancer took from each, so a wrong scale shows as rates that follow the bleed. The
        fit leaves out the cell it is applied to (its own excess must not move the scale), and its error
        joins the cell's: ``rate_bound_pct_month`` is the rate at the least alarming scale within
        ``drift_confidence_z`` standard errors of the fitted one (and inside the range).
        """
        rated = self.rated_ah or self.bms_remaining_ah or self._capacity_ref()
        cfg = self.cfg
        if self.cap_est is not None:
            hi, lo = self.cap_est * (1 + cfg.bleed_capacity_unc), self.cap_est * (1 - cfg.bleed_capacity_unc)
        else:
            hi, lo = rated, rated * (1 - cfg.bleed_max_fade)
        out, alt = self._drift_rates_at((hi, lo))
        # per cell: rate at the rated end r1, and how far it moves towards the faded end d (linear in 1/C)
        known = [
            (k, d["rate_pct_month"], a["rate_pct_month"] - d["rate_pct_month"], d["rate_se_pct_month"])
            for k, (d, a) in enumerate(zip(out, alt, strict=True))
            if d is not None and a is not None
        ]
        z = cfg.drift_confidence_z
        for k, r1, dk, se in known:
            d = out[k]
            assert d is not None
            # weighted least squares of r1 + λ·d on a common level, over the other cells (closed form)
            rest = [(r, dd, 1 / (cfg.drift_noise_pct_month**2 + s**2)) for j, r, dd, s in known if j != k]
            sw = sum(w for _, _, w in rest)
            lam, lam_se = 0.5, 1.0
            if len(rest) >= 4 and sw > 0:
                r_bar = sum(w * r for r, _, w in rest) / sw
                d_bar = sum(w * dd for _, dd, w in rest) / sw
                sdd = sum(w * (dd - d_bar) ** 2 for _, dd, w in rest)
                if sdd > 0:
                    lam = -sum(w * (r - r_bar) * (dd - d_bar) for r, dd, w in rest) / sdd
                    lam_se = 1 / math.sqrt(sdd)
            lam = min(1.0, max(0.0, lam))
            ends = (min(1.0, max(0.0, lam - z * lam_se)), min(1.0, max(0.0, lam + z * lam_se)))
            d["rate_pct_month"] = r1 + lam * dk
            d["rate_bound_pct_month"] = max(r1 + e * dk for e in ends)
            d["rate_se_pct_month"] = max(se, alt[k]["rate_se_pct_month"])  # type: ignore[index]
            d["bleed_capacity_ah"] = round(1 / (1 / hi + lam * (1 / lo - 1 / hi)), 2)
        for k in range(len(out)):
            if out[k] is not None and alt[k] is None:
                out[k] = None
        rates = [d["rate_pct_month"] for d in out if d is not None]
        if len(rates) >= 4:
            # against the pack: each cell's stretches use the links where it was read, and their
            # reference can sit off the median cell's by a common amount (e-bike packs: ~1 %/month);
            # the median of the cells' rates is the pack, and its own error (π/2 · se² / n) joins theirs
            m = median(rates)
            for d in out:
                if d is not None:
                    d["rate_pct_month"] -= m
                    d["rate_bound_pct_month"] -= m
                    d["first_half_rate_pct_month"] = _minus(d["first_half_rate_pct_month"], m)
                    d["second_half_rate_pct_month"] = _minus(d["second_half_rate_pct_month"], m)
                    d["rate_se_pct_month"] *= math.sqrt(1 + math.pi / 2 / len(rates))
            rates, m = [r - m for r in rates], 0.0
            mad = 1.4826 * median(abs(r - m) for r in rates)
            for d in out:
                if d is not None:
                    d["z"] = (d["rate_pct_month"] - m) / max(mad, cfg.drift_noise_pct_month)
        return out

    def _capacity_slopes(self, cap_bleed: float) -> list[float]:
        """Per cell, κ: how much further than the pack it moves per % the pack moves (a cell of lower
        capacity moves further). Fitted on every observation as the cell's deviation from the pack
        against the pack's SOC, with time as a second regressor so a steady self-discharge does not
        leak into it. Links are taken at equal *counted* charge, and the count drifts (sensor gain and
        offset): without κ, a cell 4 % small in a pack that swings 60 % a day reads as 2–3 %/month of
        self-discharge. Zero where the pack's SOC did not swing enough to tell (``drift_kappa_min_swing``).
        """
        n = self.n_cells
        rows: list[tuple[float, float, list[float | None]]] = []
        for o in self.observations:
            socs = [None if x is None else x + 100 * b / cap_bleed for x, b in zip(o[3], o[6], strict=True)]
            known = sorted(x for x in socs if x is not None)
            if len(known) < max(4, n // 2):
                continue
            cut = len(known) // 4
            middle = known[cut : len(known) - cut]
            rows.append((o[0], sum(middle) / len(middle), socs))
        out = [0.0] * n
        if len(rows) < 6:
            return out
        levels = np.array([r[1] for r in rows])
        if float(levels.max() - levels.min()) < self.cfg.drift_kappa_min_swing_pct:
            return out
        times = np.array([r[0] for r in rows]) / _MONTH_S
        for k in range(n):
            sel = [j for j, r in enumerate(rows) if r[2][k] is not None]
            if len(sel) < 6:
                continue
            lv = levels[sel]
            if float(lv.max() - lv.min()) < self.cfg.drift_kappa_min_swing_pct:
                continue
            dev = np.array([rows[j][2][k] for j in sel]) - lv  # type: ignore[operator]
            design = np.column_stack([np.ones(len(sel)), lv, times[sel]])
            coef = np.linalg.lstsq(design, dev, rcond=None)[0]
            out[k] = float(coef[1])
        return out

    def _drift_rates_at(self, caps: tuple[float, float]) -> tuple[list[dict[str, Any] | None], ...]:
        """Per cell: how fast its SOC falls against the other cells', in % SOC per month, with the
        balancing bleed added back as SOC of each of ``caps`` (the links, the reference cells and κ are
        chosen once, at the first: the deviations are then exactly linear in the inverse capacity).

        An observation is linked to the latest earlier one whose counted charge differs by at most
        ``drift_max_dq_c`` of C (the next hour of a rest, or the same point of the next cycle: each level
        of charge a pack returns to — a top of charge, a rest after a ride — makes a chain of its own), so
        a cell of lower capacity, which moves further per Ah, does not read as self-discharging. Over a
        link each cell's SOC change is taken against the trimmed mean of the cells' changes (cells clipped
        full in between left out). The rate is the pooled least-squares slope of those deviations on time
        across chains (a fixed effect per chain); its standard error counts one independent point per
        ``drift_corr_s`` of observed time, since 1 mV-quantised readings give correlated residuals.
        """
        cfg = self.cfg
        n = self.n_cells
        limit = cfg.drift_max_dq_c * self._capacity_ref()
        obs = self.observations
        cap0 = caps[0]
        kappa = self._capacity_slopes(cap0)
        chain_of: list[int] = []
        # per cell, per chain: [times], [cumulative deviation of the readings], [of the bleed, % per Ah⁻¹]
        Stretch = tuple[list[float], list[float], list[float]]
        series: list[dict[int, Stretch]] = [{} for _ in range(n)]
        stretches: list[list[Stretch]] = [[] for _ in range(n)]
        res = [0.0] * n
        bled = [0.0] * n  # bleed added back over the cell's links, % SOC × Ah
        n_chains = 0
        for j, b in enumerate(obs):
            a = None
            for i in range(j - 1, max(-1, j - 60), -1):
                cand = obs[i]
                if cand[2] != b[2] or b[0] - cand[0] > cfg.drift_max_link_s:
                    break
                if abs(b[1] - cand[1]) <= limit:
                    a = cand
                    break
            if a is None:
                chain_of.append(n_chains)
                n_chains += 1
                continue
            chain = chain_of[i]
            chain_of.append(chain)
            # per valid cell: (change at cap0, reading's change, bleed's change × capacity)
            changes: list[tuple[float, float, float] | None] = [None] * n
            for k in range(n):
                sa, sb = a[3][k], b[3][k]
                if sa is not None and sb is not None and a[5][k] == b[5][k]:
                    # the bleed took out of this cell what the pack current did not: add it back
                    bleed = 100 * (b[6][k] - a[6][k])
                    changes[k] = (sb - sa + bleed / cap0, sb - sa, bleed)
            valid = sorted(c for c in changes if c is not None)
            if len(valid) < max(4, n // 2):
                continue
            # a reference that moves by a sixteenth of a 1 mV step (the median would jump a whole one),
            # with the weak cell outside it
            cut = len(valid) // 4
            middle = valid[cut : len(valid) - cut]
            ref_read = sum(c[1] for c in middle) / len(middle)
            ref_bleed = sum(c[2] for c in middle) / len(middle)
            for k in range(n):
                c = changes[k]
                if c is None:
                    continue
                part = series[k].get(chain)
                if part is None or part[0][-1] != a[0]:
                    # the cell's first link in this chain, or it missed one: a new stretch from here
                    part = series[k][chain] = ([a[0]], [0.0], [0.0])
                    stretches[k].append(part)
                ts, ys_read, ys_bleed = part
                ts.append(b[0])
                bled[k] += c[2]
                # a cell of other capacity moves (1 + κ) times as far as the pack: take that out
                ys_read.append(ys_read[-1] + c[1] - (1 + kappa[k]) * ref_read)
                ys_bleed.append(ys_bleed[-1] + c[2] - (1 + kappa[k]) * ref_bleed)
                res[k] = max(res[k], a[4], b[4])
        arrays = [
            [(np.array(ts), np.array(yr), np.array(yb)) for ts, yr, yb in stretches[k] if len(ts) >= 2]
            for k in range(n)
        ]
        return tuple(
            [
                self._drift_fit([(ts, yr + yb / cap) for ts, yr, yb in arrays[k]], res[k], bled[k] / cap)
                for k in range(n)
            ]
            for cap in caps
        )

    def _drift_fit(
        self, parts: list[tuple[np.ndarray, np.ndarray]], res_k: float, bled_k: float
    ) -> dict[str, Any] | None:
        """One cell's rate from its stretches (times, cumulative deviation): see :meth:`_drift_rates_at`."""
        cfg = self.cfg
        sxx = sxy = rss = 0.0
        points = links = 0
        t_lo, t_hi, observed = math.inf, -math.inf, 0.0
        for ts, ys in parts:
            tc = ts - ts.mean()
            sxx += float(tc @ tc)
            sxy += float(tc @ (ys - ys.mean()))
            points += len(ts)
            links += len(ts) - 1
            observed += float(ts[-1] - ts[0])
            t_lo, t_hi = min(t_lo, float(ts[0])), max(t_hi, float(ts[-1]))
        span = t_hi - t_lo if parts else 0.0
        # the time covered by links, not the span between the first and the last: two 1 h links a
        # day apart are two quantised steps, not a day of evidence
        if observed < cfg.drift_min_span_s or sxx <= 0:
            return None
        slope = sxy / sxx
        mid = (t_lo + t_hi) / 2
        # the same regression on each half of the record: a steady drift shows in both, one odd step
        # (a 1 mV boundary crossed once) in one only
        halves = [[0.0, 0.0], [0.0, 0.0]]  # [sxy, sxx] before / after the middle
        for ts, ys in parts:
            tc = ts - ts.mean()
            r = ys - ys.mean() - slope * tc
            rss += float(r @ r)
            for half, sel in enumerate((ts <= mid, ts >= mid)):
                if sel.sum() >= 2:
                    th, yh = ts[sel], ys[sel]
                    thc = th - th.mean()
                    halves[half][0] += float(thc @ (yh - yh.mean()))
                    halves[half][1] += float(thc @ thc)
        half_rates = [sxy_h / sxx_h * _MONTH_S if sxx_h > 0 else None for sxy_h, sxx_h in halves]
        sigma = max(math.sqrt(rss / max(1, points - len(parts) - 1)), res_k / math.sqrt(12))
        # never more independent points than there are (chains that meet once a day, e.g. nights)
        n_eff = min(float(points), max(2.0, observed / cfg.drift_corr_s))
        se_fit = sigma / math.sqrt(sxx * n_eff / points)
        # and where a reading sits inside its 1 mV step is unknown at each end of a stretch: the
        # difference of two uniform errors (sd 0.41 step) over the span, per independent stretch
        se_step = 0.41 * res_k / span / math.sqrt(len(parts))
        se = math.sqrt(se_fit**2 + se_step**2)
        raw_drop = sum(float(ys[-1] - ys[0]) for _, ys in parts)
        return {
            "rate_pct_month": slope * _MONTH_S,
            "rate_bound_pct_month": slope * _MONTH_S,
            "rate_se_pct_month": se * _MONTH_S,
            "drop_pct": raw_drop,
            "first_half_rate_pct_month": half_rates[0],
            "second_half_rate_pct_month": half_rates[1],
            "observed_h": span / 3600,
            "pairs": links,
            "chains": len(parts),
            # degrees of freedom of the residuals: a handful of links gets Student's t, not the normal
            "dof": max(1, points - len(parts) - 1),
            "bleed_added_pct": round(bled_k, 3),
            # the SOC one 1 mV step of the reading is worth where the cell was read (the coarsest)
            "step_pct": res_k,
        }

    def _offsets(self, k: int) -> list[list[Any]]:
        """Cell ``k``'s SOC against the trimmed mean of the cells at each observation (% SOC, bleed added
        back): the evidence plotted on the Health card, thinned to ``evidence_points``."""
        pts: list[list[Any]] = []
        cap = self._capacity_ref()
        for o in self.observations:
            if o[3][k] is None:
                continue
            socs = [None if x is None else x + 100 * b / cap for x, b in zip(o[3], o[6], strict=True)]
            known = sorted(x for x in socs if x is not None)
            cut = len(known) // 4
            middle = known[cut : len(known) - cut] or known
            pts.append([_utc(o[0]), round(socs[k] - sum(middle) / len(middle), 3)])
        step = max(1, math.ceil(len(pts) / self.cfg.evidence_points))
        return pts[::-1][::step][::-1]

    def _self_discharging(self, d: dict[str, Any]) -> bool:
        """A sequential decision on one cell's drift (re-taken at every report as evidence accrues): the
        lower confidence bound of its excess self-discharge (the rate at the least alarming bleed
        capacity, less Student's one-sided quantile for ``drift_confidence_z`` at its degrees of freedom
        times its standard error) is past the flag; the drop shows in both halves of the record (a steady
        drift, not one odd 1 mV step); and the cell stands far outside the other cells' spread (robust z)."""
        cfg = self.cfg
        rate = d["rate_pct_month"]
        q = _t_quantile(cfg.drift_confidence_z, d["dof"])
        lower = -d["rate_bound_pct_month"] - q * d["rate_se_pct_month"]
        halves = (d["first_half_rate_pct_month"], d["second_half_rate_pct_month"])
        return (
            lower >= cfg.self_discharge_flag_pct_month
            and all(h is not None and h <= cfg.drift_min_half_share * rate for h in halves)
            and d.get("z", 0.0) <= -cfg.drift_min_z
        )

    # ---- resistance --------------------------------------------------------------------------------
    def _close_window(self) -> None:
        win, self.win = self.win, []
        exc, self.win_exc = self.win_exc, 0.0
        cfg = self.cfg
        if len(win) < cfg.min_pairs + 1:
            return
        cap = self._capacity_ref()
        if math.sqrt(exc) < cfg.min_excitation_c * cap:
            return
        if abs(win[-1][4] - win[0][4]) > cfg.max_window_soc_drift * cap:
            return
        # resistance rises towards either end of the curve: measure it in the middle only
        soc = self.soc_estimate()
        if soc is None:
            soc = self.bms_soc
        if soc is None or not cfg.r_soc_range_pct[0] <= soc <= cfg.r_soc_range_pct[1]:
            return
        d_i = np.diff(np.array([w[1] for w in win], dtype=float))
        cells = np.array([w[2] for w in win], dtype=float)
        d_cells = np.diff(cells, axis=0)
        d_pack = d_cells.sum(axis=1)
        n = self.n_cells
        q_var = 2 / 12  # a difference of two 1 mV-quantised readings
        i_var = 2 * (cfg.current_noise_a**2 + 0.01 / 12)
        r_pack, r2 = deming(d_i, d_pack, n * q_var / i_var)
        if not r2 >= cfg.min_r2 or not r_pack > 0:
            return
        per_cell = deming_columns(d_i, d_cells, q_var / i_var)
        if any(not (x > 0) for x in per_cell):
            return
        temps = [sum(w[3]) / len(w[3]) for w in win if w[3]]
        temp = sum(temps) / len(temps) if temps else 25.0
        norm = 1 + cfg.r_temp_coeff_per_c * (25.0 - min(max(temp, -10.0), 45.0))
        self.r_windows.append(
            [win[-1][0], round(temp, 2), r_pack / norm, [round(x / norm, 6) for x in per_cell]]
        )
        horizon = win[-1][0] - cfg.resistance_days * _DAY_S
        while self.r_windows and self.r_windows[0][0] < horizon:
            self.r_windows.pop(0)
        del self.r_windows[:-500]
        if len(self.r_windows) >= cfg.min_windows:
            hour = win[-1][0] // 3600 * 3600
            point = [hour, round(median(w[2] for w in self.r_windows), 4), len(self.r_windows)]
            if self.r_history and self.r_history[-1][0] == hour:
                self.r_history[-1] = point
            else:
                self.r_history.append(point)
                del self.r_history[: -cfg.resistance_history_points]

    def _soc_rate_mismatch(self, soc: float | None) -> Finding | None:
        """The BMS's SOC and the counted charge moved apart since the last anchor faster than a drifting
        counter can: a rate mismatch (say so), not a drift to correct with ``set --soc``."""
        a = self.soc_anchor
        if (
            soc is None
            or a is None
            or a.get("bms_soc") is None
            or self.bms_soc is None
            or self.t_last is None
        ):
            return None
        moved_bms = self.bms_soc - a["bms_soc"]
        moved_count = soc - a["soc"] * 100  # the anchor keeps a fraction
        hours = max(0.0, self.t_last - a["t"]) / 3600
        gap = abs(moved_bms - moved_count)
        if gap <= self.cfg.soc_suggest_pct + self.cfg.soc_rate_tolerance_pct_per_h * hours:
            return None
        return Finding(
            "soc_rate_mismatch",
            "info",
            f"since {_utc(a['t'])} the BMS's SOC moved {moved_bms:+.1f} points and the counted charge "
            f"{moved_count:+.1f} in {hours:.1f} h: not drift (setting the SOC would not fix it); check the "
            f"BMS's rated capacity, or the samples' clock",
            evidence={
                "anchored_at": _utc(a["t"]),
                "bms_soc_moved_pct": round(moved_bms, 1),
                "counted_soc_moved_pct": round(moved_count, 1),
                "hours": round(hours, 2),
            },
        )

    # ---- results -----------------------------------------------------------------------------------
    def _cell_capacities(self) -> list[float | None]:
        return [median(c) if c else None for c in self.cell_caps]

    def _pack_capacity(self) -> float | None:
        if any(0 < len(c) < self.cfg.min_segments for c in self.cell_caps):
            return None  # one segment is one opinion: wait for a second
        caps = [c for c in self._cell_capacities() if c is not None]
        if not caps or len(caps) * 2 < self.n_cells:
            return None
        return min(caps)

    def soc_estimate(self) -> float | None:
        a = self.soc_anchor
        if a is None or a["chain"] != self.chain:
            return None
        cap = self._capacity_ref()
        if self.cap_est is None and abs(self.q_ah - a["q"]) > self.cfg.soc_uncounted_c * cap:
            return None  # the capacity could be off by a third: that much counted charge could be 3 points
        cap = self.cap_median or cap
        return min(100.0, max(0.0, 100 * a["soc"] + 100 * (self.q_ah - a["q"]) / cap))

    def health(self) -> dict[str, Any]:
        """Everything the engine can tell now, JSON-ready; ``None`` figures come with a reason."""
        cfg = self.cfg
        out: dict[str, Any] = {
            "battery_id": self.battery_id,
            "samples": self.samples,
            "span_h": round((self.t_last - self.t_first) / 3600, 2) if self.t_last and self.t_first else 0.0,
            "chemistry": self.chemistry,
            "rated_capacity_ah": self.rated_ah or self.bms_remaining_ah,
            "full_charge_anchors": self.full_anchors,
            "rest_anchors": self.rest_anchors,
            "current_offset_a": round(self.offset_a, 3),
        }
        reasons: dict[str, str] = {}
        # capacity
        cell_caps = self._cell_capacities()
        cap = self._pack_capacity()
        rated = self.rated_ah or self.bms_remaining_ah
        if cap is None:
            reasons["capacity_ah"] = (
                f"{max(len(c) for c in self.cell_caps)} segment so far; a capacity needs {cfg.min_segments}"
                if any(self.cell_caps)
                else "no segment between two anchors yet (needs rests on steep parts of the OCV curve "
                f"{int(cfg.min_swing * 100)} % SOC apart; on LFP only the knees)"
            )
        n_seg = min((len(c) for c in self.cell_caps if c), default=0)
        spread = None
        if cap is not None:
            k = min(range(self.n_cells), key=lambda j: cell_caps[j] if cell_caps[j] is not None else math.inf)
            vals = self.cell_caps[k]
            m = median(vals)
            spread = 100 * 1.4826 * median(abs(v - m) for v in vals) / m if len(vals) > 1 else None
        out["capacity_ah"] = round(cap, 2) if cap is not None else None
        out["soh_pct"] = round(100 * cap / rated, 1) if cap is not None and rated else None
        out["fade_pct"] = round(100 - out["soh_pct"], 1) if out["soh_pct"] is not None else None
        out["cell_count"] = self.n_cells
        out["cell_spread_mv"] = self.cell_spread_mv
        if cap is not None and not rated:
            reasons["soh_pct"] = "rated capacity unknown: pass --capacity-ah"
        out["capacity"] = {
            "segments": n_seg,
            "spread_pct": round(spread, 2) if spread is not None else None,
            "confidence": _confidence(n_seg, spread),
            "recent_segments": self.segments[-5:],
        }
        # resistance
        rw = self.r_windows
        if len(rw) >= cfg.min_windows:
            out["resistance_mohm"] = round(median(w[2] for w in rw), 3)
            out["resistance"] = {
                "windows": len(rw),
                "temp_c_median": round(median(w[1] for w in rw), 1),
                "normalised_to_c": 25.0,
                "last_window": _utc(rw[-1][0]),
            }
        else:
            out["resistance_mohm"] = None
            out["resistance"] = {"windows": len(rw)}
            reasons["resistance_mohm"] = (
                f"{len(rw)} of {cfg.min_windows} windows with enough current steps so far "
                f"(needs samples at most "
                f"{cfg.max_spacing_s:g} s apart and current changes of ~{cfg.min_excitation_c:g} C)"
            )
        out["resistance_history"] = [[_utc(t), r] for t, r, _ in self.r_history]
        cell_r = self._cell_r_mohm() if len(rw) >= cfg.min_windows else None
        # SOC
        soc = self.soc_estimate()
        out["soc_pct"] = round(soc, 1) if soc is not None else None
        out["bms_soc_pct"] = self.bms_soc
        if soc is None:
            reasons["soc_pct"] = (
                "no anchor since counting began (a rest on a steep part of the OCV curve)"
                if self.soc_anchor is None or self.soc_anchor["chain"] != self.chain
                else "capacity not estimated yet and too much charge counted since the last anchor"
            )
            out["bms_soc_error_pct"] = None
        elif self.bms_soc is None:
            out["bms_soc_error_pct"] = None
            reasons["bms_soc_error_pct"] = "the BMS reported no SOC"
        else:
            out["bms_soc_error_pct"] = round(self.bms_soc - soc, 1)
        findings: list[Finding] = []
        mismatch = self._soc_rate_mismatch(soc)
        if mismatch is not None:
            findings.append(mismatch)
        elif out["bms_soc_error_pct"] is not None and abs(out["bms_soc_error_pct"]) >= cfg.soc_suggest_pct:
            target = round(soc, 1)  # type: ignore[arg-type]
            out["soc_suggestion"] = f"trackingbms set PORT --soc {target:g}"
            findings.append(
                Finding(
                    "soc_drift",
                    "warning" if abs(out["bms_soc_error_pct"]) >= 10 else "info",
                    f"the BMS says {self.bms_soc:g} % SOC, the engine counts {target:g} %: "
                    f"correct it with `trackingbms set PORT --soc {target:g}`",
                    evidence={
                        "bms_soc_pct": self.bms_soc,
                        "soc_pct": target,
                        "anchored_at": _utc(self.soc_anchor["t"]) if self.soc_anchor else None,
                    },
                )
            )
        # weak cells
        drift = self._drift_rates()
        med_cap = (
            median([c for c in cell_caps if c is not None]) if any(c is not None for c in cell_caps) else None
        )
        med_r = median(cell_r) if cell_r else None
        for k in range(self.n_cells):
            d = drift[k] if k < len(drift) else None
            if d is not None and self._self_discharging(d):
                findings.append(
                    Finding(
                        "weak_cell_self_discharge",
                        "warning",
                        f"cell {k + 1} self-discharges {-d['rate_pct_month']:.1f} %/month faster than the "
                        f"pack median (down {-d['drop_pct']:.2f} % SOC in {d['observed_h']:.0f} h observed)",
                        cell=k + 1,
                        evidence={
                            **{key: (round(v, 3) if isinstance(v, float) else v) for key, v in d.items()},
                            "offsets": self._offsets(k),
                        },
                    )
                )
            c = cell_caps[k] if k < len(cell_caps) else None
            if (
                c is not None
                and med_cap
                and c < cfg.low_capacity_ratio * med_cap
                and len(self.cell_caps[k]) >= 2
            ):
                findings.append(
                    Finding(
                        "weak_cell_low_capacity",
                        "warning",
                        f"cell {k + 1} holds {c:.1f} Ah, {100 * (1 - c / med_cap):.0f} % under the median",
                        cell=k + 1,
                        evidence={
                            "capacity_ah": round(c, 2),
                            "median_ah": round(med_cap, 2),
                            "segments": len(self.cell_caps[k]),
                        },
                    )
                )
            if cell_r and med_r and cell_r[k] > cfg.high_resistance_ratio * med_r and len(rw) >= 3:
                findings.append(
                    Finding(
                        "weak_cell_high_resistance",
                        "warning",
                        f"cell {k + 1} has {cell_r[k]:.2f} mΩ, {cell_r[k] / med_r:.1f}× the pack median",
                        cell=k + 1,
                        evidence={
                            "resistance_mohm": round(cell_r[k], 3),
                            "median_mohm": round(med_r, 3),
                            "windows": len(rw),
                        },
                    )
                )
        out["weak_cells"] = sorted({f.cell for f in findings if f.cell is not None})
        out["findings"] = [asdict(f) for f in findings]
        out["cells"] = [
            {
                "cell": k + 1,
                "capacity_ah": round(cell_caps[k], 2) if cell_caps[k] is not None else None,
                "resistance_mohm": round(cell_r[k], 3) if cell_r else None,
                "self_discharge_vs_median_pct_month": (
                    round(-drift[k]["rate_pct_month"], 2) if drift[k] is not None else None  # type: ignore[index]
                ),
            }
            for k in range(self.n_cells)
        ]
        out["reasons"] = reasons
        return out

    # ---- persistence -------------------------------------------------------------------------------
    _STATE = (
        "battery_id", "chemistry", "rated_ah", "n_cells", "samples", "skipped", "t_first", "t_last",
        "i_last", "raw_i_last", "q_ah", "zero_h", "nonzero_h", "chain", "obs_epoch", "offset_a",
        "offset_estimates", "bleed_ah", "balancing_last",
        "bms_soc", "bms_remaining_ah", "rest_since", "rest_i", "rest_entry", "rest_last", "rest_ref",
        "next_obs_t", "last_exit", "last_full_exit", "full_anchors", "rest_anchors", "soc_anchor",
        "cell_caps", "cell_spread_mv", "cap_est", "cap_median", "segments", "observations", "clips",
        "clip_mv", "clip_pending", "clip_q_ah", "win", "win_start", "win_exc", "r_windows", "r_history",
    )  # fmt: skip

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON types (config included)."""
        return {
            "version": STATE_VERSION,
            "config": asdict(self.cfg),
            **{k: getattr(self, k) for k in self._STATE},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BatteryEstimator:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"estimator state version {state.get('version')!r}, expected {STATE_VERSION}")
        est = cls(EstimatorConfig(**state["config"]))
        for k in cls._STATE:
            setattr(est, k, state[k])
        return est


def _t_quantile(z: float, dof: int) -> float:
    """Student's t quantile for the normal quantile ``z`` (Cornish–Fisher expansion, within 1 % of the
    exact value from 4 degrees of freedom; scipy.stats would cost its import at every start)."""
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def _minus(x: float | None, m: float) -> float | None:
    return None if x is None else x - m


def _confidence(segments: int, spread_pct: float | None) -> str:
    if segments >= 3 and spread_pct is not None and spread_pct <= 3:
        return "high"
    if segments >= 2:
        return "medium"
    return "low" if segments else "none"
