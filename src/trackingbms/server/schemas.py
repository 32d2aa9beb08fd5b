"""Request / response shapes for the OpenAPI document (docs/api.md is the prose version)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


#: a heartbeat is validated field by field and bounded, and unknown fields are dropped (not stored): it is
#: shown to every user of the tenant, so a device must not be able to put megabytes or NaN in it
_HEARTBEAT_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False, str_max_length=200)
U64 = 2**63 - 1


class BatteryLink(BaseModel):
    model_config = _HEARTBEAT_CONFIG
    battery_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    link_state: LinkState
    since: str | None = Field(default=None, max_length=40)
    frames_good: int | None = Field(default=None, ge=0, le=U64)
    frames_bad: int | None = Field(default=None, ge=0, le=U64)
    last_error: str | None = Field(default=None, max_length=200)


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
    disk_used_pct: float | None = Field(default=None, ge=0, le=1000)
    disk_budget_mb: float | None = Field(default=None, ge=0)
    thinned_total: int | None = Field(default=None, ge=0, le=U64)
    dead_letter_count: int | None = Field(default=None, ge=0, le=U64)
    parked_count: int | None = Field(default=None, ge=0, le=U64)
    uplink: str | None = Field(default=None, max_length=32)
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
