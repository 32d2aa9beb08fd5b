"""Home Assistant MQTT discovery: every pack this gateway polls appears in Home Assistant as a device.

Enabled by a ``[home_assistant]`` table in gateway.toml (``broker = "mqtt://…"``). Topics, with ``D`` the
discovery prefix (``homeassistant``), ``T`` the topic prefix (``trackingbms``) and ``N`` the pack's node id
(its battery id with anything but ``[A-Za-z0-9_-]`` replaced by ``_``):

- ``D/<sensor|binary_sensor|switch>/tbms_N/<object>/config`` (retained): the discovery configs, in Home
  Assistant's documented schema (device class, unit, state class, availability, device with the model,
  firmware and serial read from the BMS); sent again when Home Assistant announces itself on ``D/status``;
- ``T/N/state`` (retained): one JSON object per pack (the gateway's merged latest state plus power, cell
  min / max / delta, per-cell and per-sensor keys, readable fault texts, the link state), at most every
  ``publish_interval_s`` and at once when the link or a MOSFET changes;
- ``T/N/availability`` (retained): ``online`` while the BMS link is ``ok`` or ``degraded``, else ``offline``;
  ``T/<client_id>/status``: the gateway itself (``offline`` is the MQTT will). An entity is available
  only when both say ``online``, except the link-state sensor, which follows the gateway alone;
- ``T/N/charge_mos/set`` and ``T/N/discharge_mos/set`` (``ON`` / ``OFF``): only for the packs listed in
  ``mosfet_switches`` (none by default); the write goes through :func:`trackingbms.bms.writes.guarded_write`,
  the path of ``trackingbms set``, and the state read back is published. Other packs show their MOSFETs
  as read-only binary sensors.

Hand-written on aiomqtt rather than a discovery library: the schema used here is a few dictionaries, and
those libraries bring paho's thread loop and their own entity model, where we need the gateway's state
and its BMS clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from trackingbms import __version__
from trackingbms.bms.faults import fault_text
from trackingbms.bms.writes import guarded_write
from trackingbms.gateway.config import ConfigError, HomeAssistantConfig
from trackingbms.gateway.state import GatewayState, merge_latest

log = logging.getLogger("trackingbms.gateway.homeassistant")

#: link states in which the pack's values are current
AVAILABLE_LINK_STATES = ("ok", "degraded")
#: Home Assistant's limit for a sensor's state
MAX_STATE_CHARS = 255
MOSFETS = ("charge_mos", "discharge_mos")


def node_of(battery_id: str) -> str:
    """A battery id as a discovery node / object id (Home Assistant allows ``[a-zA-Z0-9_-]`` there)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", battery_id)


def _value(key: str) -> str:
    # a null renders as "None", which Home Assistant's MQTT entities take as "unknown"
    return "{{ value_json." + key + " }}"


def _on_off(key: str) -> str:
    v = "value_json." + key
    return "{% if " + v + " is none %}None{% elif " + v + " %}ON{% else %}OFF{% endif %}"


def _measure(name: str, key: str, unit: str | None, device_class: str | None, **extra: Any) -> dict:
    cfg: dict[str, Any] = {"name": name, "value_template": _value(key), "state_class": "measurement"}
    if unit is not None:
        cfg["unit_of_measurement"] = unit
    if device_class is not None:
        cfg["device_class"] = device_class
    cfg.update(extra)
    return cfg


def sensors(cell_count: int, temp_count: int, cell_entities: bool) -> dict[str, dict[str, Any]]:
    """Object id → the sensor's entity-specific config (topics, device and availability are added later)."""
    out: dict[str, dict[str, Any]] = {
        "voltage": _measure("Voltage", "voltage_v", "V", "voltage", suggested_display_precision=2),
        "current": _measure("Current", "current_a", "A", "current", suggested_display_precision=1),
        "power": _measure("Power", "power_w", "W", "power", suggested_display_precision=0),
        "soc": _measure("State of charge", "soc_pct", "%", "battery", suggested_display_precision=1),
        "remaining": _measure("Remaining capacity", "remaining_ah", "Ah", None, icon="mdi:battery-clock"),
        "cycles": {
            "name": "Cycles",
            "value_template": _value("cycles"),
            "state_class": "total_increasing",
            "icon": "mdi:battery-sync",
        },
        "cell_min": _measure("Cell min", "cell_min_mv", "mV", "voltage"),
        "cell_max": _measure("Cell max", "cell_max_mv", "mV", "voltage"),
        "cell_delta": _measure("Cell delta", "cell_delta_mv", "mV", "voltage"),
        "state": {
            "name": "State",
            "value_template": _value("state"),
            "device_class": "enum",
            "options": ["idle", "charging", "discharging"],
        },
        "faults": {"name": "Faults", "value_template": _value("faults_text"), "icon": "mdi:alert"},
    }
    for i in range(1, temp_count + 1):
        out[f"temp_{i}"] = _measure(f"Temperature {i}", f"temp_{i}_c", "°C", "temperature")
    if cell_entities:
        for i in range(1, cell_count + 1):
            # many per pack: present but disabled until the user enables the ones they want
            out[f"cell_{i}"] = _measure(
                f"Cell {i}", f"cell_{i}_mv", "mV", "voltage", enabled_by_default=False
            )
    return out


def state_payload(latest: dict[str, Any] | None, link_state: str) -> dict[str, Any]:
    """The pack's state topic: the latest values (null when unknown) and the figures derived from them."""
    s = latest or {}
    out: dict[str, Any] = {
        key: s.get(key)
        for key in ("ts", "voltage_v", "current_a", "soc_pct", "remaining_ah", "cycles", "state", *MOSFETS)
    }
    v, i = s.get("voltage_v"), s.get("current_a")
    out["power_w"] = round(v * i, 1) if v is not None and i is not None else None
    cells = [c for c in s.get("cells_mv") or [] if c is not None]
    out["cell_min_mv"] = min(cells) if cells else None
    out["cell_max_mv"] = max(cells) if cells else None
    out["cell_delta_mv"] = max(cells) - min(cells) if cells else None
    for n, mv in enumerate(s.get("cells_mv") or [], 1):
        out[f"cell_{n}_mv"] = mv
    for n, t in enumerate(s.get("temps_c") or [], 1):
        out[f"temp_{n}_c"] = t
    faults = s.get("faults")
    if faults is None:
        out["faults_text"] = None
    else:
        text = "; ".join(fault_text(f) for f in faults) or "none"
        out["faults_text"] = text if len(text) <= MAX_STATE_CHARS else text[: MAX_STATE_CHARS - 1] + "…"
    out["faults"] = faults
    out["link_state"] = link_state
    return out


def _default_client_id() -> str:
    return "trackingbms-" + node_of(socket.gethostname())[:40]


class HomeAssistant:
    """The MQTT output; :meth:`run` keeps it connected (with backoff) until cancelled."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        state: GatewayState,
        client_of: Callable[[str], Any | None],
    ):
        try:
            import aiomqtt  # noqa: F401  (checked now: a missing extra is a start-up error, not a silent one)
        except ImportError:
            raise ConfigError("[home_assistant] needs aiomqtt: pip install 'trackingbms[mqtt]'") from None
        self.cfg = cfg
        self.state = state
        self.client_of = client_of
        self.client_id = cfg.client_id or _default_client_id()
        self.gateway_topic = f"{cfg.topic_prefix}/{node_of(self.client_id)}/status"
        self.switchable = set(cfg.mosfet_switches)
        #: per battery: what the BMS says about itself (model, firmware, serial), read once per run
        self.device_info: dict[str, dict[str, Any]] = {}
        self._shapes: dict[str, tuple[int, int, str]] = {}  # what each pack's published discovery assumed
        self._mqtt: Any = None
        self._dirty: set[str] = set()
        self._last_mos: dict[str, tuple[Any, ...]] = {}
        self._wake = asyncio.Event()
        self._write_locks = {bid: asyncio.Lock() for bid in state.batteries}
        self._events = state.subscribe()  # subscribed from the start: nothing is missed while connecting
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ topics and configs

    def base(self, battery_id: str) -> str:
        return f"{self.cfg.topic_prefix}/{node_of(battery_id)}"

    def command_topic(self, battery_id: str, mosfet: str) -> str:
        return f"{self.base(battery_id)}/{mosfet}/set"

    def device(self, battery_id: str) -> dict[str, Any]:
        info = self.device_info.get(battery_id, {})
        dev: dict[str, Any] = {
            "identifiers": [f"trackingbms_{node_of(battery_id)}"],
            "name": battery_id,
            "manufacturer": "Daly",
            "model": info.get("hardware_version") or "Daly smart BMS",
        }
        for key, field in (
            ("sw_version", "software_version"),
            ("hw_version", "hardware_version"),
            ("serial_number", "serial"),
        ):
            if info.get(field):
                dev[key] = info[field]
        return dev

    def discovery(self, battery_id: str) -> dict[str, dict[str, Any]]:
        """Discovery topic → config for one pack."""
        st = self.state.batteries[battery_id]
        latest = st.latest or {}
        node = f"tbms_{node_of(battery_id)}"
        base = self.base(battery_id)
        device = self.device(battery_id)
        origin = {"name": "TrackingBMS", "sw_version": __version__}
        both = [{"topic": self.gateway_topic}, {"topic": f"{base}/availability"}]

        def entity(component: str, object_id: str, cfg: dict[str, Any], gateway_only: bool = False) -> None:
            full = {
                **cfg,
                "unique_id": f"{node}_{object_id}",
                "state_topic": f"{base}/state",
                "availability": [both[0]] if gateway_only else both,
                "availability_mode": "all",
                "device": device,
                "origin": origin,
            }
            out[f"{self.cfg.discovery_prefix}/{component}/{node}/{object_id}/config"] = full

        out: dict[str, dict[str, Any]] = {}
        cells = len(latest.get("cells_mv") or [])
        temps = len(latest.get("temps_c") or [])
        for object_id, cfg in sensors(cells, temps, self.cfg.cell_entities).items():
            entity("sensor", object_id, cfg)
        entity(
            "sensor",
            "link",
            {
                "name": "BMS link",
                "value_template": _value("link_state"),
                "device_class": "enum",
                "options": ["ok", "degraded", "asleep", "disconnected"],
                "entity_category": "diagnostic",
            },
            gateway_only=True,
        )
        for mosfet, label in zip(MOSFETS, ("Charge MOSFET", "Discharge MOSFET"), strict=True):
            common = {"name": label, "value_template": _on_off(mosfet), "icon": "mdi:electric-switch"}
            if battery_id in self.switchable:
                cfg = {
                    **common,
                    "command_topic": self.command_topic(battery_id, mosfet),
                    "payload_on": "ON",
                    "payload_off": "OFF",
                    "state_on": "ON",
                    "state_off": "OFF",
                    "optimistic": False,
                }
                entity("switch", mosfet, cfg)
            else:
                entity("binary_sensor", mosfet, {**common, "payload_on": "ON", "payload_off": "OFF"})
        return out

    # ------------------------------------------------------------------ publishing

    async def _publish(self, topic: str, payload: Any, *, retain: bool = True) -> None:
        if self._mqtt is None:
            return
        data = payload if isinstance(payload, str | bytes) else orjson.dumps(payload)
        await self._mqtt.publish(topic, data, qos=1, retain=retain)

    def _shape(self, battery_id: str) -> tuple[int, int, str]:
        latest = self.state.batteries[battery_id].latest or {}
        return (
            len(latest.get("cells_mv") or []),
            len(latest.get("temps_c") or []),
            repr(sorted(self.device_info.get(battery_id, {}).items())),
        )

    async def publish_discovery(self, battery_id: str) -> None:
        self._shapes[battery_id] = self._shape(battery_id)
        for topic, cfg in self.discovery(battery_id).items():
            await self._publish(topic, cfg)

    async def publish_state(self, battery_id: str) -> None:
        st = self.state.batteries[battery_id]
        if self._shapes.get(battery_id) != self._shape(battery_id):
            # cells / sensors counted, or the BMS identity read: the entities change
            await self.publish_discovery(battery_id)
        await self._publish(f"{self.base(battery_id)}/state", state_payload(st.latest, st.link_state))

    async def publish_availability(self, battery_id: str) -> None:
        link = self.state.batteries[battery_id].link_state
        online = "online" if link in AVAILABLE_LINK_STATES else "offline"
        await self._publish(f"{self.base(battery_id)}/availability", online)

    async def publish_all(self) -> None:
        await self._publish(self.gateway_topic, "online")
        for bid in self.state.batteries:
            await self.publish_discovery(bid)
            await self.publish_availability(bid)
            await self.publish_state(bid)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        import aiomqtt

        url = urlsplit(self.cfg.broker)
        tls = url.scheme == "mqtts"
        kwargs: dict[str, Any] = {
            "hostname": url.hostname or "localhost",
            "port": url.port or (8883 if tls else 1883),
            "username": unquote(url.username) if url.username else None,
            "password": unquote(url.password) if url.password else None,
            "identifier": self.client_id,
            "will": aiomqtt.Will(self.gateway_topic, "offline", qos=1, retain=True),
            "keepalive": 30,
        }
        if tls:
            kwargs["tls_context"] = ssl.create_default_context()
        shown = f"{url.scheme}://{url.hostname}:{kwargs['port']}"
        backoff_s = 1.0
        for bid in self.state.batteries:
            self._spawn(self._read_device_info(bid))
        try:
            while True:
                try:
                    async with aiomqtt.Client(**kwargs) as client:
                        self._mqtt = client
                        log.info("Home Assistant output connected to %s", shown)
                        backoff_s = 1.0
                        await self._session(client)
                except aiomqtt.MqttError as exc:
                    log.warning("Home Assistant MQTT %s: %s; retrying in %.0f s", shown, exc, backoff_s)
                finally:
                    self._mqtt = None
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 60.0)
        finally:
            for task in self._tasks:
                task.cancel()
            self.state.unsubscribe(self._events)

    async def _session(self, client: Any) -> None:
        await client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
        for bid in sorted(self.switchable):
            for mosfet in MOSFETS:
                await client.subscribe(self.command_topic(bid, mosfet), qos=1)
        await self.publish_all()
        tasks = [
            asyncio.create_task(self._messages(client)),
            asyncio.create_task(self._follow_state()),
            asyncio.create_task(self._publisher()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # an MqttError ends the session: reconnect
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # a clean stop says so (a crash leaves it to the will)
                async with asyncio.timeout(2):
                    await client.publish(self.gateway_topic, "offline", qos=1, retain=True)

    async def _messages(self, client: Any) -> None:
        commands = {
            self.command_topic(bid, mosfet): (bid, mosfet) for bid in self.switchable for mosfet in MOSFETS
        }
        async for message in client.messages:
            topic = str(message.topic)
            payload = bytes(message.payload or b"").decode(errors="replace").strip()
            if topic == f"{self.cfg.discovery_prefix}/status":
                if payload == "online":  # Home Assistant (re)started: it wants the configs again
                    await self.publish_all()
            elif topic in commands:
                bid, mosfet = commands[topic]
                if payload.upper() not in ("ON", "OFF"):
                    log.warning("%s: ignoring %r (expected ON or OFF)", topic, payload[:40])
                    continue
                self._spawn(self.switch(bid, mosfet, payload.upper() == "ON"))

    async def _follow_state(self) -> None:
        while True:
            event = await self._events.get()
            bid = event.get("battery_id")
            if bid not in self.state.batteries:
                continue
            if event.get("type") == "link":
                await self.publish_availability(bid)
                await self.publish_state(bid)
                continue
            sample = event.get("sample") or {}
            previous = self._last_mos.get(bid)
            mos = tuple(sample.get(m) for m in MOSFETS)
            if any(v is not None for v in mos) and mos != previous:
                self._last_mos[bid] = mos
                await self.publish_state(bid)  # a MOSFET changed (a protection, a write): at once
            else:
                self._dirty.add(bid)
                self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for bid in sorted(dirty):
                await self.publish_state(bid)
            await asyncio.sleep(self.cfg.publish_interval_s)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_device_info(self, battery_id: str) -> None:
        """Model, firmware and serial from the BMS, once its link is up (for the device in discovery)."""
        delay_s = 2.0
        while True:
            client = self.client_of(battery_id)
            info_of = getattr(client, "info", None)
            if info_of is not None and self.state.batteries[battery_id].link_state in AVAILABLE_LINK_STATES:
                try:
                    info = await info_of()
                except Exception as exc:  # the link dropped meanwhile: try again on the next link
                    log.debug("%s: BMS identity not read: %s", battery_id, exc)
                else:
                    found = {k: info.get(k) for k in ("serial", "software_version", "hardware_version")}
                    found = {k: str(v).strip() for k, v in found.items() if v}
                    if found:
                        self.device_info[battery_id] = found
                        self._dirty.add(battery_id)  # the next state publish resends discovery
                        self._wake.set()
                    return
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 60.0)

    async def switch(self, battery_id: str, mosfet: str, on: bool) -> None:
        """A MOSFET command from Home Assistant, through the guarded write path; the state read back is
        published either way (so a refused switch flips back in Home Assistant)."""
        label = mosfet.replace("_mos", "")
        what = f"{battery_id}: Home Assistant asks {label} MOSFET {'ON' if on else 'OFF'}"
        async with self._write_locks[battery_id]:
            client = self.client_of(battery_id)
            if client is None:
                link = self.state.batteries[battery_id].link_state
                log.warning("%s: not written, the BMS link is %s", what, link)
            else:
                try:
                    result = await guarded_write(client, **{mosfet: on})
                except Exception as exc:  # the BMS did not answer / refused: say so, keep running
                    log.warning("%s: failed: %s", what, exc)
                else:
                    st = self.state.batteries[battery_id]
                    # the MOSFETs as read back (not a stored sample: the next poll brings the rest)
                    back = result.reading
                    mos = {m: getattr(back, m) for m in MOSFETS if getattr(back, m) is not None}
                    st.latest = merge_latest(st.latest, mos)
                    if result.failed:
                        log.warning("%s: %s", what, "; ".join(result.failed))
                    else:
                        log.warning("%s: done", what)  # a remote write is worth a line at the default level
            await self.publish_state(battery_id)
