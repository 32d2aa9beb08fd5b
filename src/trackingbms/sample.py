"""The Sample wire contract v1 as pydantic models: :class:`Reading` and :class:`Sample`.

Everything else about the contract (field names in wire order, the literals, the time format, the CSV
export format) is in :mod:`trackingbms.model`, which also resolves these two names on first use: import
them from there (``from trackingbms.model import Reading, Sample``). They live in a module of their own so
that importing :mod:`trackingbms.model` does not import pydantic (issue 14: ``trackingbms read`` starts
without it and imports it when the first reading is built).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from trackingbms.model import (
    BATTERY_ID_PATTERN,
    MEASUREMENT_FIELDS,
    PackState,
    Source,
    Via,
    format_ts,
    utc_now,
)


class Reading(BaseModel):
    """One reading of one BMS as the client produced it: measurements, time, source.

    ``errors`` names the commands that failed and why (e.g. ``{"0x95": "timeout after 180 ms"}``),
    so a partial reading says what is missing and why.
    """

    # defer_build: the validators are built on first use, so a command that only reads a BMS never pays for
    # building Sample's (the CLI's start-up time, issue 14)
    model_config = ConfigDict(extra="forbid", defer_build=True)

    ts: datetime = Field(default_factory=utc_now)
    source: Source | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    soc_pct: float | None = None
    remaining_ah: float | None = None
    cycles: Annotated[int, Field(ge=0)] | None = None
    state: PackState | None = None
    charge_mos: bool | None = None
    discharge_mos: bool | None = None
    charger_connected: bool | None = None
    load_connected: bool | None = None
    cells_mv: list[int] | None = None
    temps_c: list[float] | None = None
    balancing: list[int] | None = None
    faults: list[str] | None = None
    fault_code: Annotated[int, Field(ge=0, le=255)] | None = None
    errors: dict[str, str] | None = None

    @field_validator("ts")
    @classmethod
    def _ts_utc(cls, ts: datetime) -> datetime:
        if ts.tzinfo is None:
            raise ValueError("ts must carry a timezone (RFC 3339, e.g. 2026-11-24T10:00:00.000Z)")
        ts = ts.astimezone(UTC)
        return ts.replace(microsecond=ts.microsecond // 1000 * 1000)

    @field_serializer("ts")
    def _ser_ts(self, ts: datetime) -> str:
        return format_ts(ts)

    def measurements(self) -> dict[str, Any]:
        """The measurement fields that are present (not None)."""
        return {k: v for k in MEASUREMENT_FIELDS if (v := getattr(self, k)) is not None}

    @property
    def is_partial(self) -> bool:
        return bool(self.errors)


class Sample(Reading):
    """A Reading with its identity: which pack, its sequence number, how it travelled (wire contract v1)."""

    battery_id: str = Field(pattern=BATTERY_ID_PATTERN)
    seq: int = Field(ge=0)
    via: Via | None = None

    @classmethod
    def from_reading(cls, reading: Reading, *, battery_id: str, seq: int, via: Via | None = None) -> Sample:
        return cls(**reading.model_dump(exclude_none=False), battery_id=battery_id, seq=seq, via=via)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent on the wire: absent fields are left out, not sent as null."""
        return self.model_dump(mode="json", exclude_none=True)
