"""Request / response shapes for the OpenAPI document (docs/api.md is the prose version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from trackingbms.model import Connectivity, LinkState, Sample

SAMPLE_EXAMPLE: dict[str, Any] = {
    "battery_id": "pack-1",
    "seq": 1042,
    "ts": "2026-11-24T10:29:25.123Z",
    "source": "a5-uart",
    "via": "wifi",
    "voltage_v": 53.2,
    "current_a": -12.5,
    "soc_pct": 87.3,
    "remaining_ah": 91.2,
    "cycles": 12,
    "state": "discharging",
    "charge_mos": True,
    "discharge_mos": True,
    "charger_connected": False,
    "load_connected": True,
    "cells_mv": [
        3325,
        3326,
        3324,
        3327,
        3325,
        3326,
        3324,
        3325,
        3326,
        3327,
        3325,
        3324,
        3326,
        3325,
        3327,
        3326,
    ],
    "temps_c": [24.0, 25.0],
    "balancing": [],
    "faults": [],
    "fault_code": 0,
}


class IngestBatch(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"samples": [SAMPLE_EXAMPLE]}]})
    samples: list[Sample] = Field(
        max_length=5000, description="up to 5,000 samples; gzip the body if you like"
    )


class Rejection(BaseModel):
    index: int = Field(description="position of the sample in the batch")
    error: str = Field(description="which field is wrong and why")


class BatteryConfig(BaseModel):
    poll_interval_s: float | None = Field(default=None, gt=0)
    cadences_s: dict[str, float] | None = None


class DeviceConfigIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "heartbeat_interval_s": 30,
                    "batteries": {
                        "pack-1": {
                            "poll_interval_s": 1.0,
                            "cadences_s": {"cells": 5, "temps": 10, "status": 30, "faults": 5},
                        }
                    },
                }
            ]
        }
    )
    heartbeat_interval_s: float | None = Field(default=None, gt=0)
    batteries: dict[str, BatteryConfig] = Field(default_factory=dict)


class DeviceConfig(DeviceConfigIn):
    config_version: int


class IngestReply(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": 498,
                    "duplicates": 1,
                    "rejected": [{"index": 7, "error": "seq: must be an integer"}],
                }
            ]
        }
    )
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    config: DeviceConfig | None = None


#: samples per relay request: the receipt lists the runs of seqs it covers, and a gateway takes it as one
#: WebSocket message of at most 64 KiB (gateway/relay.py), which 1,000 runs always fit
RELAY_MAX_SAMPLES = 1000


class RelayBatch(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"device_key": "3f1c0e9a5b7d2c4e8a6f0b1d3c5e7a9b", "samples": [SAMPLE_EXAMPLE]}]
        }
    )
    device_key: str = Field(
        max_length=64, description="the gateway's relay key, from its LAN API (GET /local/v1/relay)"
    )
    samples: list[Sample] = Field(
        max_length=RELAY_MAX_SAMPLES,
        description="up to 1,000 of the gateway's unsent samples; `via` is set to phone",
    )


class RelayReceipt(BaseModel):
    v: int = Field(description="receipt version (1)")
    payload: str = Field(
        description='JSON text: {"v": 1, "device", "key_id", "issued", "by", "batteries": {battery_id: '
        "[[first_seq, last_seq], ...]}}: every sample in those runs is on the server"
    )
    sig: str = Field(description="HMAC-SHA256 of the payload with the key from the device's token (hex)")


class RelayReply(BaseModel):
    device: str = Field(description="the device the samples were stored for")
    accepted: int
    duplicates: int
    rejected: list[Rejection]
    receipt: RelayReceipt = Field(
        description="hand it to the gateway unchanged (WebSocket /local/v1/relay/receipt)"
    )


#: a heartbeat is validated field by field and bounded, and unknown fields are dropped (not stored): it is
#: shown to every user of the tenant, so a device must not be able to put megabytes or NaN in it
_HEARTBEAT_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False, str_max_length=200)
U64 = 2**63 - 1
LAST_ERROR_MAX = 500


def _clip(limit: int) -> Callable[[Any], Any]:
    return lambda v: v[: limit - 1] + "…" if isinstance(v, str) and len(v) > limit else v


class BatteryLink(BaseModel):
    model_config = _HEARTBEAT_CONFIG
    battery_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    link_state: LinkState
    since: str | None = Field(default=None, max_length=40)
    frames_good: int | None = Field(default=None, ge=0, le=U64)
    frames_bad: int | None = Field(default=None, ge=0, le=U64)
    #: shortened, not refused: a gateway must not lose its heartbeat over a long error text
    last_error: Annotated[str | None, BeforeValidator(_clip(LAST_ERROR_MAX))] = Field(
        default=None, max_length=LAST_ERROR_MAX
    )


class UplinkPath(BaseModel):
    """One path to the server in the gateway's priority order (the phone, the last resort, comes last)."""

    model_config = _HEARTBEAT_CONFIG
    name: str = Field(max_length=32)
    priority: int | None = Field(default=None, ge=1, le=64)
    state: Literal["active", "standby", "failing"] | None = None
    last_error: Annotated[str | None, BeforeValidator(_clip(LAST_ERROR_MAX))] = Field(
        default=None, max_length=LAST_ERROR_MAX
    )


class Heartbeat(BaseModel):
    model_config = ConfigDict(
        **_HEARTBEAT_CONFIG,
        json_schema_extra={
            "examples": [
                {
                    "version": "0.1.0",
                    "uptime_s": 12.5,
                    "queue_depth": 0,
                    "oldest_queued_ts": None,
                    "disk_used_pct": 1.2,
                    "uplink": "wifi",
                    "config_version": 0,
                    "ts": "2026-11-24T10:00:12.500Z",
                    "batteries": [
                        {
                            "battery_id": "pack-1",
                            "link_state": "ok",
                            "since": "2026-11-24T10:00:00.000Z",
                            "frames_good": 10,
                            "frames_bad": 0,
                            "last_error": None,
                        }
                    ],
                }
            ]
        },
    )
    version: str | None = Field(default=None, max_length=64)
    #: the gateway's clock when it sent this: the server keeps its offset as ``clock_skew_s``
    ts: str | None = Field(default=None, max_length=40)
    uptime_s: float | None = Field(default=None, ge=0)
    queue_depth: int | None = Field(default=None, ge=0, le=U64)
    oldest_queued_ts: str | None = Field(default=None, max_length=40)
    disk_used_pct: float | None = Field(default=None, ge=0)  # can pass 100 % (the budget is a target)
    disk_budget_mb: float | None = Field(default=None, ge=0)
    thinned_total: int | None = Field(default=None, ge=0, le=U64)
    dead_letter_count: int | None = Field(default=None, ge=0, le=U64)
    parked_count: int | None = Field(default=None, ge=0, le=U64)
    uplink: str | None = Field(default=None, max_length=32)
    #: which path the last acknowledged samples took (an uplink's name, or "phone": relayed) and when
    via: str | None = Field(default=None, max_length=32)
    delivered_ts: str | None = Field(default=None, max_length=40)
    uplinks: list[UplinkPath] | None = Field(default=None, max_length=16)
    config_version: int | None = Field(default=None, ge=0, le=2**31 - 1)
    batteries: list[BatteryLink] = Field(default_factory=list, max_length=256)


class HeartbeatReply(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"ok": True},
                {
                    "ok": True,
                    "config": {
                        "config_version": 3,
                        "heartbeat_interval_s": 30,
                        "batteries": {"pack-1": {"poll_interval_s": 1.0}},
                    },
                },
            ]
        }
    )
    ok: bool = True
    config: DeviceConfig | None = None


class LoginIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ops@acme.test", "password": "s3cret-pass"}]}
    )
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)


class UserOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ops@acme.test", "role": "admin", "tenant": "acme"}]}
    )
    email: str
    role: Literal["admin", "operator", "viewer"]
    tenant: str


class LoginOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "tbu_…",
                    "token_type": "bearer",
                    "user": {"email": "ops@acme.test", "role": "admin", "tenant": "acme"},
                }
            ]
        }
    )
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    user: UserOut


class SiteOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"site_id": 1, "name": "depot"}]})
    site_id: int
    name: str


Severity = Literal["info", "warning", "critical"]


class HealthSummary(BaseModel):
    soh_pct: float | None
    weak_cells: list[int]
    findings: int


FLEET_ITEM_EXAMPLE: dict[str, Any] = {
    "battery_id": "pack-1",
    "name": "Forklift 1",
    "site_id": 1,
    "site_name": "depot",
    "device_id": "gw-1",
    "connectivity": "online",
    "last_seen": "2026-11-24T10:29:25.123Z",
    "last_received": "2026-11-24T10:29:26.002Z",
    "link_state": "ok",
    "latest": SAMPLE_EXAMPLE,
    "latest_ts": {
        **{k: "2026-11-24T10:29:25.123Z" for k in ("voltage_v", "current_a", "soc_pct")},
        **{
            k: "2026-11-24T10:29:21.120Z"
            for k in SAMPLE_EXAMPLE
            if k not in ("battery_id", "seq", "ts", "source", "via", "voltage_v", "current_a", "soc_pct")
        },
    },
    "alarms": [],
    "cell_min_mv": 3324,
    "cell_max_mv": 3327,
    "cell_delta_mv": 3,
    "power_w": -665.0,
}


class FleetItem(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [FLEET_ITEM_EXAMPLE]})
    battery_id: str
    name: str
    site_id: int
    site_name: str
    device_id: str | None
    connectivity: Connectivity
    last_seen: str | None = Field(description="the newest sample's ts (when the pack was last read)")
    last_received: str | None = Field(description="when samples last arrived at the server")
    link_state: LinkState | None = Field(description="the gateway's word on the BMS link, from its heartbeat")
    latest: Sample | None = Field(
        description="last known state: each measurement field from the newest sample that carried it; "
        "seq, ts, source, via and errors are the newest sample's"
    )
    latest_ts: dict[str, str] = Field(
        description="per measurement field in latest, the ts of the sample it comes from (its age)"
    )
    alarms: list[str] = Field(description="faults of the newest sample that carried faults")
    cell_min_mv: int | None
    cell_max_mv: int | None
    cell_delta_mv: int | None
    power_w: float | None
    active_alarms: int = Field(default=0, description="alarms raised or acknowledged, not yet cleared")
    worst_severity: Severity | None = Field(default=None, description="of the active alarms")
    health: HealthSummary | None = Field(default=None, description="from the analytics engine")


class Fleet(BaseModel):
    batteries: list[FleetItem]


class BatteryDetail(FleetItem):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**FLEET_ITEM_EXAMPLE, "cell_count": 16, "temp_count": 2, "poll_interval_s": 5.0}]
        }
    )
    cell_count: int
    temp_count: int
    poll_interval_s: float
    chemistry: str | None = Field(
        default=None, description="lfp, nmc or lto as its admin set it (picks the cell-voltage thresholds)"
    )
    rated_capacity_ah: float | None = Field(default=None, description="what SOH is measured against")


class SeriesOut(BaseModel):
    min: list[float | None]
    max: list[float | None]
    mean: list[float | None]


class HistoryOut(BaseModel):
    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "battery_id": "pack-1",
                    "from": "2026-11-24T00:00:00.000Z",
                    "to": "2026-11-24T00:03:00.000Z",
                    "bucket_s": 60,
                    "t": [1795478400, 1795478460],
                    "series": {
                        "voltage_v": {"min": [53.1, 53.0], "max": [53.4, 58.8], "mean": [53.2, 53.3]},
                        "current_a": {"min": [-12.5, -13.0], "max": [-12.1, -12.0], "mean": [-12.3, -12.4]},
                    },
                }
            ]
        },
    )
    battery_id: str
    from_: str = Field(alias="from")
    to: str
    bucket_s: int
    t: list[float] = Field(description="bucket starts, epoch seconds; empty buckets are left out")
    series: dict[str, SeriesOut]


class DeviceOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "device_id": "gw-1",
                    "name": "gw-1",
                    "last_contact": "2026-11-24T10:29:26.002Z",
                    "heartbeat": {
                        "version": "0.1.0",
                        "uptime_s": 12.5,
                        "queue_depth": 0,
                        "uplink": "wifi",
                        "batteries": [{"battery_id": "pack-1", "link_state": "ok"}],
                    },
                    "config_version": 1,
                    "reported_config_version": 1,
                    "config": {"config_version": 1, "heartbeat_interval_s": 30, "batteries": {}},
                }
            ]
        }
    )
    device_id: str
    name: str
    last_contact: str | None
    heartbeat: dict[str, Any] | None
    config_version: int
    reported_config_version: int | None
    config: dict[str, Any] | None


class AlarmOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "battery_id": "pack-1",
                    "battery_name": "Forklift 1",
                    "site": "depot",
                    "rule_id": "cell_voltage_high",
                    "severity": "critical",
                    "status": "acknowledged",
                    "active": True,
                    "cell": 3,
                    "value": 3652.0,
                    "message": "cell 3 cell over-voltage (max_cell_mv 3652, set > 3600)",
                    "raised_at": "2026-11-24T10:29:25.123Z",
                    "acknowledged_at": "2026-11-24T10:31:02.000Z",
                    "acknowledged_by": "ops@acme.test",
                    "cleared_at": None,
                    "clear_message": None,
                }
            ]
        }
    )
    id: int
    battery_id: str
    battery_name: str
    site: str
    rule_id: str
    severity: Severity
    status: Literal["raised", "acknowledged", "cleared"]
    active: bool
    cell: int | None = Field(description="1-based cell (or sensor) the alarm names, where known")
    value: float | None
    message: str
    raised_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    cleared_at: str | None
    clear_message: str | None


class HealthOut(BaseModel):
    battery_id: str
    updated_at: str | None
    health: dict[str, Any] | None = Field(
        description="the analytics engine's report: capacity_ah, soh_pct (+ capacity.confidence, segments), "
        "resistance_mohm, soc_pct, bms_soc_error_pct, weak_cells, findings with evidence, per-cell figures, "
        "reasons for what it cannot tell yet"
    )
    reason: str | None
    alarms: list[AlarmOut] = Field(description="active alarms of this battery")


class RuleFields(BaseModel):
    """Fields of an alarm rule; null / absent: inherited from the level below."""

    metric: str | None = Field(default=None, max_length=100, description="only for a rule of your own")
    op: Literal[">", "<"] | None = None
    set: float | None = Field(default=None, description="threshold that raises the alarm")
    clear: float | None = Field(default=None, description="threshold on the safe side that clears it")
    set_delay_s: float | None = Field(default=None, ge=0, le=30 * 86400)
    clear_delay_s: float | None = Field(default=None, ge=0, le=30 * 86400)
    severity: Severity | None = None
    repeat_s: float | None = Field(default=None, gt=0, le=365 * 86400)
    notify_on_clear: bool | None = None
    title: str | None = Field(default=None, max_length=200)
    enabled: bool | None = Field(default=None, description="false switches the rule off at this level")


class RuleIn(RuleFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"rule_id": "cell_spread", "site": "depot", "set": 120, "clear": 60}]}
    )
    rule_id: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_:.-]+$",
        description="a built-in rule id, fault:<name>, or a new id of your own",
    )
    site: str | None = Field(default=None, description="override for this site only")
    battery_id: str | None = Field(default=None, description="override for this battery only")


class RuleOut(BaseModel):
    id: int
    rule_id: str
    scope: Literal["tenant", "site", "battery"]
    site: str | None
    battery_id: str | None
    metric: str | None
    enabled: bool
    op: str | None
    set: float | None
    clear: float | None
    set_delay_s: float | None
    clear_delay_s: float | None
    severity: str | None
    repeat_s: float | None
    notify_on_clear: bool | None
    title: str | None
    updated_at: str


class RulesOut(BaseModel):
    builtin: list[dict[str, Any]] = Field(description="the built-in rules (cell voltages: LFP's)")
    builtin_by_chemistry: dict[str, dict[str, dict[str, float]]] = Field(
        description="per chemistry (lfp, nmc, lto) the cell-voltage rules' set / clear (mV) a battery whose "
        "chemistry is set starts from instead"
    )
    fault_rule: str
    overrides: list[RuleOut]


class NotifyTargetIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "mailto://smtp.example.com:587?from=bms@example.com&to=ops@example.com",
                    "severities": ["warning", "critical"],
                    "recovery": True,
                }
            ]
        }
    )
    url: str = Field(
        min_length=3, max_length=2000, description="an apprise URL (mailto://, json://, ntfy://…)"
    )
    severities: list[Severity] = Field(default=["warning", "critical"], min_length=1)
    recovery: bool = Field(default=True, description="also send a message when an alarm clears")


class NotifyTargetOut(BaseModel):
    id: int
    url: str
    severities: list[Severity]
    recovery: bool
    created_at: str
