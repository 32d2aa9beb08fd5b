"""Gateway configuration: one TOML file, validated at start.

Schema (every key, its default, its meaning) is shown by ``trackingbms gateway --example-config``
(:data:`EXAMPLE_CONFIG` below). Errors name the key, e.g. ``bms[0].poll_interval_s: Input should be
greater than 0``.
"""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trackingbms.bms import FAMILIES, GROUPS
from trackingbms.model import BATTERY_ID_PATTERN, Source

#: groups the poller may read on their own cadence besides "pack" (read at the poll interval); one
#: definition for every family (trackingbms.daly.snapshot.GROUPS)
SLOW_COMMANDS = tuple(name for name in GROUPS if name != "pack")

DEFAULT_CADENCES_S: dict[str, float] = {
    "mos": 5.0,
    "cells": 5.0,
    "temps": 10.0,
    "balancing": 10.0,
    "faults": 5.0,
    "status": 30.0,
}


class ConfigError(Exception):
    """The configuration is invalid; the message names the key(s) and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


UPLINK_SCHEMES = ("http://", "https://", "mqtt://", "mqtts://")


class UplinkConfig(_Strict):
    """One uplink (HTTP(S) or MQTT); listed in priority order (the first is the primary)."""

    name: Literal["wifi", "cellular", "lan", "mqtt"] = Field(description="also the Sample's `via`")
    url: str = Field(
        description="server base URL (https://tbms.example.com) or MQTT broker(s) "
        "(mqtts://broker:8883, or mqtt://node1:1883,node2:1883 for a cluster: tried in turn)"
    )
    batch_max_samples: int = Field(1000, ge=1, le=5000)
    batch_max_age_s: float = Field(1.0, ge=0)
    #: HTTP: request timeout; MQTT: how long to wait for the server's acknowledgement of a batch
    timeout_s: float = Field(15.0, gt=0)
    max_in_flight: int = Field(2, ge=1, le=8)
    gzip: bool = True
    #: MQTT only: the device's broker user name, also its topic (tbms/<username>/...), printed by
    #: `trackingbms admin mqtt-device`; the password is device_token
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,128}$")
    #: MQTT only: CA bundle for mqtts:// (default: the system's)
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.startswith(UPLINK_SCHEMES):
            raise ValueError("must start with http://, https://, mqtt:// or mqtts://")
        return url.rstrip("/")

    @property
    def is_mqtt(self) -> bool:
        return self.url.startswith(("mqtt://", "mqtts://"))

    @model_validator(mode="after")
    def _mqtt(self) -> UplinkConfig:
        if self.is_mqtt and not self.username:
            raise ValueError("username: required for an mqtt:// uplink (see trackingbms admin mqtt-device)")
        if self.is_mqtt and importlib.util.find_spec("aiomqtt") is None:
            raise ValueError("url: mqtt:// uplinks need aiomqtt: pip install 'trackingbms[mqtt]'")
        return self


class BmsConfig(_Strict):
    """One BMS polled by this gateway."""

    battery_id: str = Field(pattern=BATTERY_ID_PATTERN)
    port: str = Field(
        min_length=1,
        description="device path (/dev/ttyUSB0), tcp://host:port, can://iface/channel, ble://address",
    )
    #: the BMS protocol family (trackingbms.bms.FAMILIES); several BMS on one port share its link
    family: str = "a5"
    #: A5 only: host address (0x40 RS485/PC, 0x80 UART/app); default 0x80 on ble://, else 0x40
    address: int | None = Field(None, ge=0, le=255)
    board: int = Field(1, ge=1, le=16)
    baud: int = Field(9600, gt=0)
    invert_current: bool = False
    #: the Sample's source; default: from the family and the wire (a5 on serial → a5-uart, d2 → d2-rs485...)
    source: Source | None = None
    retries: int = Field(2, ge=0, le=10)
    poll_interval_s: float = Field(1.0, gt=0)
    cadences_s: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CADENCES_S))
    #: no reply at all for this long → link state "asleep"
    asleep_after_s: float = Field(10.0, gt=0)
    #: reconnect / wake-probe backoff ceiling
    reconnect_max_s: float = Field(30.0, gt=0)

    @field_validator("family")
    @classmethod
    def _family(cls, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        return family

    @field_validator("cadences_s")
    @classmethod
    def _cadences(cls, cadences: dict[str, float]) -> dict[str, float]:
        for name, every_s in cadences.items():
            if name not in SLOW_COMMANDS:
                raise ValueError(f"unknown command {name!r}; known: {', '.join(SLOW_COMMANDS)}")
            if every_s < 0:
                raise ValueError(f"{name}: cadence must be >= 0 seconds (0 = every poll)")
        return cadences


class FailoverConfig(_Strict):
    #: switch to the next uplink after the active one failed for this long
    after_s: float = Field(60.0, ge=0)
    #: while failed over, probe the primary this often (heartbeat); success → fail back
    probe_interval_s: float = Field(30.0, gt=0)


class RetryConfig(_Strict):
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)


class LocalApiConfig(_Strict):
    enabled: bool = True
    listen: str = "0.0.0.0:8081"
    #: optional LAN token: requests need `Authorization: Bearer <token>` or `?token=<token>`
    token: str | None = None
    #: the server's dashboard URL, for the app served here to switch to server mode when it answers;
    #: default: the http(s) uplinks' URLs in priority order (set it when the uplinks are MQTT only)
    server_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$")

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 0.0.0.0:8081")
        return listen

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class HomeAssistantConfig(_Strict):
    """Optional local MQTT output with Home Assistant discovery (trackingbms.gateway.homeassistant)."""

    #: mqtt://[user:password@]host[:port] or mqtts:// (TLS)
    broker: str
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]+$")
    #: state, availability and command topics: <topic_prefix>/<battery_id>/...
    topic_prefix: str = Field("trackingbms", pattern=r"^[A-Za-z0-9_/-]+$")
    #: publish each pack's state at most this often (and at once when its link or a MOSFET changes)
    publish_interval_s: float = Field(5.0, ge=0)
    #: one (disabled by default) sensor per cell besides min / max / delta
    cell_entities: bool = True
    #: battery ids whose charge / discharge MOSFETs Home Assistant may switch (none by default)
    mosfet_switches: list[str] = Field(default_factory=list)
    client_id: str | None = None

    @field_validator("broker")
    @classmethod
    def _broker(cls, broker: str) -> str:
        if not broker.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://, e.g. mqtt://homeassistant.local:1883")
        return broker


class BleConfig(_Strict):
    """The Bluetooth LE service for phones and laptops beside the pack (docs/ble.md); needs bumble."""

    enabled: bool = True
    #: bumble HCI transport: usb:0 (a USB dongle, no BlueZ needed), hci-socket:0 (Linux's adapter, BlueZ
    #: stopped), serial:/dev/ttyACM0, tcp-client:HOST:PORT (a controller over TCP); virtual:HOST:PORT = no
    #: hardware, a virtual radio `trackingbms direct ble://…?hci=tcp-client:HOST:PORT` reaches (to try it)
    transport: str = Field(min_length=1)
    #: advertised as TrackingBMS-<device>; default: this machine's host name
    device: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,16}$")
    #: static random address (first byte C0–FF); default: derived from the device name
    address: str | None = Field(None, pattern=r"^[C-Fc-f][0-9A-Fa-f](:[0-9A-Fa-f]{2}){5}$")
    #: command that joins a Wi-Fi network (set_wifi), run with TBMS_WIFI_SSID / TBMS_WIFI_PSK in its
    #: environment (e.g. nmcli, see EXAMPLE_CONFIG); without it set_wifi answers "unsupported"
    wifi_command: list[str] | None = None
    #: readings per history page at most (a page must also fit 128 fragments at the link's MTU)
    page_max: int = Field(32, ge=1, le=255)

    @model_validator(mode="after")
    def _bumble(self) -> BleConfig:
        if self.enabled and importlib.util.find_spec("bumble") is None:
            raise ValueError("transport: the Bluetooth service needs bumble: pip install 'trackingbms[ble]'")
        return self


class GatewayConfig(_Strict):
    """The whole gateway configuration (see :data:`EXAMPLE_CONFIG`)."""

    device_token: str = Field(min_length=8)
    state_dir: Path
    #: the queue database may use this much disk; policy at 100 %: see trackingbms.gateway.queue
    disk_budget_mb: float = Field(200.0, gt=0)
    #: acknowledged samples are kept this long for the local history API
    local_history_h: float = Field(24.0, ge=0)
    heartbeat_interval_s: float = Field(30.0, gt=0)
    #: samples rejected for a fixable reason (battery not assigned to this device yet) are parked and
    #: retried this often (one probe sample per battery; when it is taken, the rest follow at once)
    parked_retry_s: float = Field(300.0, gt=0)
    uplinks: list[UplinkConfig] = Field(min_length=1)
    bms: list[BmsConfig] = Field(min_length=1)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    local_api: LocalApiConfig = Field(default_factory=LocalApiConfig)
    home_assistant: HomeAssistantConfig | None = None
    ble: BleConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        ids = [b.battery_id for b in self.bms]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"bms: battery_id {', '.join(dup)} listed more than once")
        names = [u.name for u in self.uplinks]
        if len(set(names)) != len(names):
            raise ValueError("uplinks: each uplink name may appear once")
        # BMS on one port share its link (an RS485 bus): one family, one baud, a board number each
        by_port: dict[str, list[BmsConfig]] = {}
        for b in self.bms:
            by_port.setdefault(b.port, []).append(b)
        for port, group in by_port.items():
            if len(group) < 2:
                continue
            who = ", ".join(b.battery_id for b in group)
            if len({b.family for b in group}) > 1 or len({b.baud for b in group}) > 1:
                raise ValueError(f"bms: {who} share port {port}: they must have the same family and baud")
            if group[0].family == "d2":
                raise ValueError(f"bms: {who} share port {port}: D2 boards all answer at 0xD2, one per bus")
            boards = [b.board for b in group]
            if len(set(boards)) != len(boards):
                raise ValueError(f"bms: {who} share port {port}: give each its own board number")
        unknown = sorted(set(self.home_assistant.mosfet_switches) - set(ids)) if self.home_assistant else []
        if unknown:
            names = ", ".join(unknown)
            raise ValueError(f"home_assistant.mosfet_switches: {names} is not a [[bms]] battery_id")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "config") -> GatewayConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, origin)) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> GatewayConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, origin=str(path))


def format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid gateway configuration:"]
    for err in exc.errors():
        key = ""
        for part in err["loc"]:
            key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if not key and ": " in msg:  # cross-field checks name their key in the message
            key, msg = msg.split(": ", 1)
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        lines.append(f"  {key or '(top level)'}: {msg}")
    return "\n".join(lines)


EXAMPLE_CONFIG = """\
# TrackingBMS gateway configuration (trackingbms gateway -c gateway.toml)
# Every key not marked "required" shows its default.

device_token = "tbd_PASTE_IT_HERE"   # required: printed once by `trackingbms admin provision-device`
state_dir = "/var/lib/trackingbms"   # required: durable queue (SQLite) and remote config live here
disk_budget_mb = 200                 # queue DB budget; at 100 % the oldest samples are thinned (see docs)
local_history_h = 24                 # acknowledged samples kept for the local history API
heartbeat_interval_s = 30            # also sent at once when a BMS link changes state
parked_retry_s = 300                 # retry samples parked because the battery was not assigned (yet)
log_level = "info"                   # debug | info | warning | error

# Uplinks in priority order; `name` is also the Sample's `via` (wifi | cellular | lan | mqtt).
[[uplinks]]
name = "wifi"                        # required: wifi | cellular | lan | mqtt
url = "https://tbms.example.com"     # required: server base URL, or mqtt(s)://broker[:port][,broker2...]
batch_max_samples = 1000             # send when this many samples wait ...
batch_max_age_s = 1.0                # ... or when the oldest waiting sample is this old
timeout_s = 15
max_in_flight = 2                    # concurrent requests while draining a backlog
gzip = true

# A second uplink, used when the first fails (uncomment to add one):
# [[uplinks]]
# name = "cellular"                  # secondary: larger batches, less often, to save data
# url = "https://tbms.example.com"
# batch_max_samples = 5000
# batch_max_age_s = 60

# An MQTT uplink is an [[uplinks]] table with name = "mqtt", url = "mqtts://broker.example.com:8883"
# (a cluster: "mqtt://n1:1883,n2:1883", tried in turn) and username = "t1-gw-1" (printed by
# `trackingbms admin mqtt-device`; the password is device_token). QoS 1, persistent session; a sample
# leaves the queue only when the server's acknowledgement arrives on tbms/<username>/ack, and a batch
# without one after timeout_s is sent again (docs/scaling.md).

[failover]
after_s = 60                         # fail over after the active uplink failed this long
probe_interval_s = 30                # while failed over, probe the primary this often; fail back on success

[retry]
backoff_initial_s = 1                # jittered exponential backoff; 429 Retry-After is honoured
backoff_max_s = 60

[local_api]                          # LAN access: /, /local/v1/state, /local/v1/history, /local/v1/live
enabled = true
listen = "0.0.0.0:8081"
# token = "lan-secret"               # optional: then send Authorization: Bearer <token> or ?token=
# server_url = "https://tbms.example.com"  # the dashboard the app served here switches to when it answers
#                                   (default: the http(s) uplinks' URLs)

# Optional: Home Assistant MQTT discovery (each pack appears as a device with its sensors).
# [home_assistant]
# broker = "mqtt://user:password@homeassistant.local:1883"   # mqtts:// for TLS
# discovery_prefix = "homeassistant"
# topic_prefix = "trackingbms"       # state / availability / command topics: trackingbms/<battery_id>/...
# publish_interval_s = 5             # state at most this often (link and MOSFET changes at once)
# cell_entities = true               # one sensor per cell (disabled in HA until you enable it)
# mosfet_switches = ["pack-1"]       # packs whose charge / discharge MOSFETs HA may switch (none by default)

# Optional: Bluetooth LE service for phones and laptops beside the pack (docs/ble.md; needs bumble).
# Configuration commands over Bluetooth need the pairing code printed at the first start (also in
# <state_dir>/ble-pairing-code and in the gateway-served app).
# [ble]
# transport = "usb:0"                # bumble HCI transport: usb:0, hci-socket:0, serial:/dev/ttyACM0, or
#                                    # "virtual:127.0.0.1:7510" to try it without Bluetooth hardware
# device = "cabin"                   # advertised as TrackingBMS-cabin (default: the host name)
# wifi_command = ["sh", "-c", 'nmcli device wifi connect "$TBMS_WIFI_SSID" password "$TBMS_WIFI_PSK"']
# page_max = 32                      # readings per history page

# One [[bms]] table per BMS.
[[bms]]
battery_id = "pack-1"                # required: [A-Za-z0-9._-]{1,64}, as provisioned on the server
port = "/dev/ttyUSB0"                # required: serial device, tcp://host:port, can://iface/chan, ble://addr
family = "a5"                        # a5 | d2 | p81 | a5-can | hkms-can
# address = 0x40                     # A5 host: 0x40 = RS485/UART via the PC port, 0x80 = Bluetooth/app;
#                                    # default 0x80 on ble://, else 0x40
board = 1                            # board number (several BMSs on one RS485 bus)
baud = 9600
invert_current = false               # some firmware reports the current with the opposite sign
# source = "a5-uart"                 # default from family and wire: a5-uart, d2-rs485, p81-rs485, a5-can...
retries = 2
poll_interval_s = 1.0                # "pack" (0x90: voltage, current, SOC) every poll
asleep_after_s = 10                  # no reply at all this long -> link state "asleep"
reconnect_max_s = 30                 # reconnect / wake-probe backoff ceiling

[bms.cadences_s]                     # other commands, seconds between reads (0 = every poll)
mos = 5
cells = 5
temps = 10
balancing = 10
faults = 5
status = 30
"""
