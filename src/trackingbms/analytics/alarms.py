"""Alarm rules and their lifecycle, pure: the server feeds metrics and time, stores state, sends events.

The rule shape follows Victron's set / clear alarms (a BMV low alarm clears only above its clear value, after
the value has persisted) and Home Assistant's threshold helper with ``for:`` delays: a ``set`` threshold, a
``clear`` threshold on the safe side of it (hysteresis), a delay each way, a severity, an optional
reminder period (``repeat_s``) and whether a recovery is announced (``notify_on_clear``).

Lifecycle per (battery, rule), one alarm at a time: ``ok`` → (condition held ``set_delay_s``) ``raised`` →
optionally ``acknowledged`` (by whom, when) → (clear condition held ``clear_delay_s``) ``cleared`` and back
to ``ok``; every transition is an :class:`AlarmEvent` for history and notifications (at most one message
per crossing: ``notify`` is true on raise, on a reminder, and on clear when the rule asks for it).

Metrics are plain numbers by name; :func:`sample_metrics` derives the per-sample ones (and names the cell),
fault rules use ``fault:<name>`` (1 while the BMS reports it), analytics findings ``finding:<kind>`` and
no-data rules the connectivity seconds the server computes (``offline_s``, ``link_down_s``, ``asleep_s``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, NamedTuple

Op = Literal[">", "<"]
Severity = Literal["info", "warning", "critical"]
STATE_VERSION = 1


@dataclass(frozen=True)
class Rule:
    id: str
    metric: str
    op: Op
    set: float
    #: the value must be back past this (on the safe side of ``set``) to clear
    clear: float
    set_delay_s: float = 0.0
    clear_delay_s: float = 0.0
    severity: Severity = "warning"
    repeat_s: float | None = None
    notify_on_clear: bool = True
    title: str = ""

    def __post_init__(self) -> None:
        if self.op not in (">", "<"):
            raise ValueError(f"rule {self.id}: op must be '>' or '<', got {self.op!r}")
        if (self.op == ">" and self.clear > self.set) or (self.op == "<" and self.clear < self.set):
            raise ValueError(
                f"rule {self.id}: clear ({self.clear}) must be on the safe side of set ({self.set})"
            )
        if (
            self.set_delay_s < 0
            or self.clear_delay_s < 0
            or (self.repeat_s is not None and self.repeat_s <= 0)
        ):
            raise ValueError(f"rule {self.id}: delays must be >= 0 and repeat_s > 0")
        if self.severity not in ("info", "warning", "critical"):
            raise ValueError(f"rule {self.id}: severity must be info, warning or critical")

    def tripped(self, value: float) -> bool:
        return value > self.set if self.op == ">" else value < self.set

    def recovered(self, value: float) -> bool:
        return value <= self.clear if self.op == ">" else value >= self.clear


@dataclass
class AlarmEvent:
    kind: Literal["raised", "repeat", "acknowledged", "cleared"]
    rule_id: str
    severity: Severity
    t: float
    value: float | None
    message: str
    notify: bool
    cell: int | None = None
    by: str | None = None


@dataclass
class _Track:
    status: Literal["ok", "raised", "acknowledged"] = "ok"
    #: when the set (while ok) or clear (while active) condition started holding; None = not holding
    pending_since: float | None = None
    raised_at: float | None = None
    last_notified: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    value: float | None = None
    cell: int | None = None


#: the built-in defaults (a tenant overrides them per site / battery); thresholds for 16S LFP-like packs
BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        "cell_voltage_high",
        "max_cell_mv",
        ">",
        3600,
        3450,
        10,
        60,
        "critical",
        3600,
        title="cell over-voltage",
    ),
    Rule(
        "cell_voltage_low",
        "min_cell_mv",
        "<",
        2800,
        3000,
        10,
        60,
        "critical",
        3600,
        title="cell under-voltage",
    ),
    Rule("cell_spread", "cell_spread_mv", ">", 80, 40, 60, 300, "warning", title="cell imbalance"),
    Rule("temperature_high", "max_temp_c", ">", 50, 45, 30, 300, "warning", title="temperature high"),
    Rule("temperature_low", "min_temp_c", "<", 0, 3, 30, 300, "warning", title="temperature low"),
    Rule("soc_low", "soc_pct", "<", 10, 11.5, 60, 60, "warning", title="SOC low"),
    Rule("offline", "offline_s", ">", 300, 0, 0, 0, "warning", title="no data: gateway offline"),
    Rule("link_down", "link_down_s", ">", 1200, 0, 0, 0, "warning", title="no data: BMS link down"),
    Rule(
        "bms_asleep",
        "asleep_s",
        ">",
        3600,
        0,
        0,
        0,
        "info",
        notify_on_clear=False,
        title="no data: BMS asleep",
    ),
    Rule("weak_cell", "finding:weak_cell", ">", 0.5, 0.5, 0, 86400, "warning", title="weak cell suspected"),
    Rule("soc_drift", "finding:soc_drift", ">", 0.5, 0.5, 0, 0, "info", title="BMS SOC drifted"),
    Rule("capacity_low", "soh_pct", "<", 70, 72, 0, 0, "warning", title="capacity below 70 %"),
    Rule(
        "resistance_rising",
        "resistance_rise_pct",
        ">",
        50,
        40,
        0,
        0,
        "warning",
        title="resistance up 50 % since first measured",
    ),
)


#: the cell-voltage rules' (set, clear) in mV per chemistry, a step inside a BMS's own protection for it
#: (LFP 3.65 / 2.5 V, NMC 4.25 / 2.8 V, LTO 2.8 / 1.5 V): the built-ins above are LFP's. A battery's chemistry
#: is set by its admin (``trackingbms admin battery-profile``), never guessed from a sample: an LFP pack in
#: over-voltage reads like a healthy NMC one, exactly when the alarm matters
CELL_VOLTAGE_LIMITS_MV: dict[str, dict[str, tuple[int, int]]] = {
    "lfp": {"cell_voltage_high": (3600, 3450), "cell_voltage_low": (2800, 3000)},
    "nmc": {"cell_voltage_high": (4220, 4120), "cell_voltage_low": (3000, 3300)},
    "lto": {"cell_voltage_high": (2750, 2650), "cell_voltage_low": (1800, 2000)},
}
#: the chemistries a battery may be set to (the engine's OCV curves: analytics/ocv.py)
CHEMISTRIES: tuple[str, ...] = tuple(CELL_VOLTAGE_LIMITS_MV)


def builtin_rules(chemistry: str | None = None) -> tuple[Rule, ...]:
    """The built-in rules for a battery of that chemistry (None: not set, LFP's thresholds)."""
    limits = CELL_VOLTAGE_LIMITS_MV.get(chemistry or "lfp", {})
    return tuple(
        override(r, {"set": limits[r.id][0], "clear": limits[r.id][1]}) if r.id in limits else r
        for r in BUILTIN_RULES
    )


def fault_severity(name: str) -> Severity:
    """Daly's level-1 bits are warnings, level-2 bits (protection acts) and unlevelled faults critical."""
    return "warning" if name.endswith("_l1") else "critical"


def fault_rule(name: str, severity: Severity | None = None) -> Rule:
    """The rule for one BMS fault bit, by its name in the fault table (e.g. ``cell_voltage_high_l2``)."""
    return Rule(
        f"fault:{name}",
        f"fault:{name}",
        ">",
        0.5,
        0.5,
        0,
        0,
        severity or fault_severity(name),
        title=name.replace("_", " "),
    )


#: the fields of a rule a tenant may override (the rest, ``id`` and ``metric``, name it)
RULE_FIELDS: tuple[str, ...] = (
    "op", "set", "clear", "set_delay_s", "clear_delay_s", "severity", "repeat_s", "notify_on_clear", "title",
)  # fmt: skip


def builtin_rule(rule_id: str, chemistry: str | None = None) -> Rule | None:
    """The built-in rule of that id (``fault:<name>`` for any fault bit), None for a tenant's own rule."""
    if rule_id.startswith("fault:"):
        return fault_rule(rule_id.removeprefix("fault:"))
    return next((r for r in builtin_rules(chemistry) if r.id == rule_id), None)


def override(rule: Rule, changes: dict[str, Any]) -> Rule:
    """``rule`` with the non-None values of ``changes`` (fields of :data:`RULE_FIELDS`); ValueError if the
    result is not a valid rule (e.g. ``clear`` on the wrong side of ``set``)."""
    values = {**asdict(rule), **{k: v for k, v in changes.items() if k in RULE_FIELDS and v is not None}}
    return Rule(**values)


def sample_metrics(
    sample: dict[str, Any], cells_range_mv: tuple[int, int] | None = None
) -> tuple[dict[str, float], dict[str, int]]:
    """(metrics, cell per metric) from one wire sample: extremes name their 1-based cell or sensor (the
    first one when several share the extreme). ``cells_range_mv``: (min, max) of its ``cells_mv`` when the
    caller has them already (the server's packing does)."""
    # runs once per ingested sample: C-level max / min / index instead of a key function per cell
    get = sample.get
    cells = get("cells_mv")
    if cells:
        lo_mv, hi_mv = cells_range_mv or (min(cells), max(cells))
        metrics: dict[str, float] = {
            "max_cell_mv": hi_mv,
            "min_cell_mv": lo_mv,
            "cell_spread_mv": hi_mv - lo_mv,
        }
        where = {"max_cell_mv": cells.index(hi_mv) + 1, "min_cell_mv": cells.index(lo_mv) + 1}
    else:
        metrics, where = {}, {}
    temps = get("temps_c")
    if temps:
        metrics["max_temp_c"], metrics["min_temp_c"] = max(temps), min(temps)
    soc = get("soc_pct")
    if soc is not None:
        metrics["soc_pct"] = soc
    faults = get("faults")
    if faults:
        for name in faults:
            metrics[f"fault:{name}"] = 1.0
            # Daly's cell-voltage bits do not say which cell; the extreme cell of the same sample does
            if name.startswith("cell_voltage_high") and "max_cell_mv" in where:
                where[f"fault:{name}"] = where["max_cell_mv"]
            elif name.startswith("cell_voltage_low") and "min_cell_mv" in where:
                where[f"fault:{name}"] = where["min_cell_mv"]
    return metrics, where


def health_metrics(
    health: dict[str, Any], resistance_baseline_mohm: float | None = None
) -> tuple[dict[str, float], dict[str, int]]:
    """(metrics, cell per metric) from :meth:`BatteryEstimator.health`: ``finding:weak_cell`` (naming the
    first weak cell), ``finding:soc_drift``, ``soh_pct`` and ``resistance_rise_pct`` against a baseline."""
    metrics: dict[str, float] = {}
    where: dict[str, int] = {}
    findings = health.get("findings") or []
    weak = sorted(f["cell"] for f in findings if f.get("kind", "").startswith("weak_cell") and f.get("cell"))
    metrics["finding:weak_cell"] = 1.0 if weak else 0.0
    if weak:
        where["finding:weak_cell"] = weak[0]
    metrics["finding:soc_drift"] = 1.0 if any(f.get("kind") == "soc_drift" for f in findings) else 0.0
    if health.get("soh_pct") is not None:
        metrics["soh_pct"] = float(health["soh_pct"])
    r = health.get("resistance_mohm")
    if r is not None and resistance_baseline_mohm:
        metrics["resistance_rise_pct"] = 100.0 * (r / resistance_baseline_mohm - 1.0)
    return metrics, where


class _Plan(NamedTuple):
    """What a quiet sample may skip, derived from the rules and the tracks' states (see
    :meth:`AlarmEvaluator.evaluate`)."""

    #: metric → (lowest, highest) value that trips none of the idle rules on it
    bounds: dict[str, tuple[float, float]]
    #: the rules that are not idle (active, or a set / clear delay running), in rule order
    busy: tuple[Rule, ...]
    #: a fault metric absent from a sample with a fault list reads 0: does 0 trip an idle fault rule?
    zero_quiet: bool
    #: every fault rule's metric at 0, for a sample with a fault list
    fault_zeros: dict[str, float]


def _idle(track: _Track) -> bool:
    return track.status == "ok" and track.pending_since is None


class AlarmEvaluator:
    """The alarms of one battery. ``evaluate`` at each new metric value; metrics absent from a call keep
    their alarm as it is (a partial sample neither raises nor clears), except ``fault:*`` metrics, which
    are 0 when a sample with a fault list does not name them.

    Fast path: nearly every sample changes nothing. A rule that is *idle* (ok, no delay running) and whose
    value does not trip it only records the value, so ``evaluate`` first checks the sample's values against
    the bounds the idle rules allow (one comparison per metric, not one pass per rule); when all are inside,
    only the busy rules (active or with a delay running) are evaluated in full and the values are kept
    aside (``_unsettled``, the latest per metric) until something reads the tracks. Any value outside the
    bounds takes the full pass. Same events and the same saved state either way (tests/analytics feed both
    paths); ``fast=False`` always takes the full pass."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...] = BUILTIN_RULES, *, fast: bool = True) -> None:
        self.rules = {r.id: r for r in rules}
        self._tracks: dict[str, _Track] = {r.id: _Track() for r in rules}
        self.fast = fast
        self._plan: _Plan | None = None
        #: latest value per metric from fast-path samples, not yet written to the tracks
        self._unsettled: dict[str, float] = {}

    @property
    def tracks(self) -> dict[str, _Track]:
        """Per rule id its alarm's state (values up to date)."""
        self._settle()
        return self._tracks

    def _settle(self) -> None:
        """Write the values the fast path kept aside into the tracks (what the full pass would have)."""
        pending = self._unsettled
        if pending:
            tracks = self._tracks
            for rid, rule in self.rules.items():
                value = pending.get(rule.metric)
                if value is not None:
                    tracks[rid].value = value
            pending.clear()

    def _make_plan(self) -> _Plan:
        bounds: dict[str, tuple[float, float]] = {}
        busy: list[Rule] = []
        zero_quiet = True
        fault_zeros: dict[str, float] = {}
        for rid, rule in self.rules.items():
            is_fault = rule.metric.startswith("fault:")
            if is_fault:
                fault_zeros[rule.metric] = 0.0
            if not _idle(self._tracks[rid]):
                busy.append(rule)
                continue
            lo, hi = bounds.get(rule.metric, (-math.inf, math.inf))
            # not tripped: value <= set for '>', value >= set for '<' (the same comparisons as tripped())
            bounds[rule.metric] = (lo, min(hi, rule.set)) if rule.op == ">" else (max(lo, rule.set), hi)
            if is_fault and rule.tripped(0.0):
                zero_quiet = False
        return _Plan(bounds, tuple(busy), zero_quiet, fault_zeros)

    def evaluate(
        self,
        t: float,
        metrics: dict[str, float],
        cells: dict[str, int] | None = None,
        *,
        faults_known: bool = False,
    ) -> list[AlarmEvent]:
        plan = self._plan
        if plan is None and self.fast:
            plan = self._plan = self._make_plan()
        if plan is not None:
            bounds, busy, zero_quiet, fault_zeros = plan
            if zero_quiet or not faults_known:
                for metric, value in metrics.items():
                    b = bounds.get(metric)
                    # written so that NaN (outside every bound) takes the full pass
                    if b is not None and not (b[0] <= value <= b[1]):
                        break
                else:
                    # quiet: the idle rules only take the values (kept aside), the busy ones run in full
                    pending = self._unsettled
                    if faults_known and fault_zeros:
                        pending.update(fault_zeros)
                    pending.update(metrics)
                    if not busy:
                        return []
                    events = self._run(busy, t, metrics, cells, faults_known)
                    if events or not all(not _idle(self._tracks[r.id]) for r in busy):
                        self._plan = None  # a rule went idle (or changed state): bounds to recompute
                    return events
        self._settle()
        self._plan = None
        return self._run(self.rules.values(), t, metrics, cells, faults_known)

    def quiet_bounds(self, *, faults_known: bool) -> dict[str, tuple[float, float]] | None:
        """Per metric the (lowest, highest) value no idle rule trips on, when :meth:`absorb_quiet` can take
        a run at all (no rule busy; with a fault list, no idle fault rule that 0 trips), else None: the
        caller computes the run's ranges only then, and may stop at the first outside."""
        if not self.fast:
            return None
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
        return None if plan.busy or (faults_known and not plan.zero_quiet) else plan.bounds

    def absorb_quiet(
        self, ranges: dict[str, tuple[float, float]], latest: dict[str, float], *, faults_known: bool
    ) -> bool:
        """A run of samples at once, when it is quiet as a whole: no rule busy, and each metric's
        (lowest, highest) over the run (``ranges``) inside the bounds the idle rules allow. Then each
        sample would have taken the fast path of :meth:`evaluate` and raised nothing: only the values are
        kept aside, ``latest`` (each metric's value in the last sample that had it) and, when any sample
        had a fault list (``faults_known``), every fault rule's metric at 0. True when taken; False
        (nothing changed) when the run must go sample by sample. The caller leaves out runs with a fault
        bit set (their rules are added on the way). A NaN in ``ranges`` is never inside."""
        if not self.fast:
            return False
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
        bounds, busy, zero_quiet, fault_zeros = plan
        if busy or (faults_known and not zero_quiet):
            return False
        for metric, (lo, hi) in ranges.items():
            b = bounds.get(metric)
            if b is not None and not (b[0] <= lo and hi <= b[1]):
                return False
        pending = self._unsettled
        if faults_known and fault_zeros:
            pending.update(fault_zeros)
        pending.update(latest)
        return True

    def _run(
        self,
        rules: Iterable[Rule],
        t: float,
        metrics: dict[str, float],
        cells: dict[str, int] | None,
        faults_known: bool,
    ) -> list[AlarmEvent]:
        """The full pass over ``rules``: each one's lifecycle step."""
        events: list[AlarmEvent] = []
        tracks = self._tracks
        for rule in rules:
            value = metrics.get(rule.metric)
            if value is None:
                if faults_known and rule.metric.startswith("fault:"):
                    value = 0.0
                else:
                    continue
            track = tracks[rule.id]
            track.value = value
            cell = (cells or {}).get(rule.metric)
            if track.status == "ok":
                if rule.tripped(value):
                    if track.pending_since is None:
                        track.pending_since = t
                    if t - track.pending_since >= rule.set_delay_s:
                        track.status, track.raised_at, track.last_notified = "raised", t, t
                        track.pending_since, track.cell = None, cell
                        events.append(self._event("raised", rule, t, value, True, cell))
                else:
                    track.pending_since = None
                continue
            # active (raised or acknowledged)
            if rule.recovered(value):
                if track.pending_since is None:
                    track.pending_since = t
                if t - track.pending_since >= rule.clear_delay_s:
                    events.append(self._event("cleared", rule, t, value, rule.notify_on_clear, track.cell))
                    tracks[rule.id] = _Track(value=value)
                continue
            track.pending_since = None
            if (
                track.status == "raised"
                and rule.repeat_s is not None
                and track.last_notified is not None
                and t - track.last_notified >= rule.repeat_s
            ):
                track.last_notified = t
                events.append(self._event("repeat", rule, t, value, True, track.cell))
        return events

    def add_rule(self, rule: Rule) -> None:
        """Add a rule met on the way (a fault bit seen for the first time); an existing one is kept."""
        if rule.id not in self.rules:
            self._settle()  # values seen before the rule existed are not its own
            self.rules[rule.id] = rule
            self._tracks[rule.id] = _Track()
            self._plan = None

    def acknowledge(self, rule_id: str, by: str, t: float) -> AlarmEvent | None:
        """Acknowledge an active alarm (no more reminders); None when it is not active."""
        track = self.tracks.get(rule_id)
        if track is None or track.status != "raised":
            return None
        track.status, track.acked_by, track.acked_at = "acknowledged", by, t
        self._plan = None
        event = self._event("acknowledged", self.rules[rule_id], t, track.value, False, track.cell)
        event.by = by
        return event

    def active(self) -> list[dict[str, Any]]:
        return [
            {"rule_id": rid, **asdict(tr), "severity": self.rules[rid].severity}
            for rid, tr in self.tracks.items()
            if tr.status != "ok"
        ]

    @staticmethod
    def _event(
        kind: str, rule: Rule, t: float, value: float | None, notify: bool, cell: int | None
    ) -> AlarmEvent:
        title = rule.title or rule.id.replace("_", " ")
        where = f" on cell {cell}" if cell else ""
        verb = {"raised": "", "repeat": "still ", "acknowledged": "acknowledged: ", "cleared": "cleared: "}[
            kind
        ]
        if rule.metric.startswith("fault:"):  # a bit: its 1 against "> 0.5" says nothing to a reader
            detail = " (BMS fault bit)"
        elif rule.metric.startswith("finding:"):
            detail = " (health engine)"
        else:
            shown = f"{value:g}" if value is not None else "?"
            detail = f" ({rule.metric} {shown}, set {rule.op} {rule.set:g})"
        message = f"{verb}{title}{where}{detail}"
        return AlarmEvent(kind, rule.id, rule.severity, t, value, message, notify, cell)  # type: ignore[arg-type]

    def to_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "tracks": {rid: asdict(tr) for rid, tr in self.tracks.items()}}

    @classmethod
    def from_state(
        cls, state: dict[str, Any], rules: list[Rule] | tuple[Rule, ...] = BUILTIN_RULES
    ) -> AlarmEvaluator:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"alarm state version {state.get('version')!r}, expected {STATE_VERSION}")
        ev = cls(rules)
        for rid, tr in state["tracks"].items():
            if rid not in ev.tracks and rid.startswith("fault:"):
                ev.add_rule(fault_rule(rid.removeprefix("fault:")))  # met on the way, kept with its state
            if rid in ev.tracks:  # a rule deleted since is dropped with its state
                ev.tracks[rid] = _Track(**tr)
        return ev


__all__ = [
    "BUILTIN_RULES",
    "CELL_VOLTAGE_LIMITS_MV",
    "CHEMISTRIES",
    "RULE_FIELDS",
    "AlarmEvaluator",
    "AlarmEvent",
    "Rule",
    "builtin_rule",
    "builtin_rules",
    "fault_rule",
    "fault_severity",
    "health_metrics",
    "override",
    "sample_metrics",
]
