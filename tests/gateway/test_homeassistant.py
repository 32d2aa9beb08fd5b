"""Home Assistant MQTT discovery, against real Mosquitto: a test client subscribes as Home Assistant does
(discovery prefix, then the state / availability topics the configs name) while ``trackingbms gateway``
polls simulated packs. Topics carry a unique prefix per test; retained messages are cleared afterwards.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import orjson
import pytest

from trackingbms.gateway.homeassistant import sensors, state_payload

from .harness import free_port, gateway_config, wait_for

pytestmark = pytest.mark.mqtt


class HomeAssistantClient:
    """What Home Assistant does on the broker: subscribe to the discovery prefix and the topics it names."""

    def __init__(self, host: str, port: int, discovery: str, topics: str):
        import paho.mqtt.client as mqtt

        self.retained: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-test-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe([(f"{discovery}/#", 1), (f"{topics}/#", 1)])
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.retained[msg.topic] = bytes(msg.payload)

    def json(self, topic: str) -> Any:
        with self.lock:
            raw = self.retained.get(topic)
        return orjson.loads(raw) if raw else None

    def text(self, topic: str) -> str | None:
        with self.lock:
            raw = self.retained.get(topic)
        return raw.decode() if raw is not None else None

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        with self.lock:
            topics = [t for t, v in self.retained.items() if v]
        for topic in topics:  # leave nothing retained on the shared broker
            self.publish(topic, b"", retain=True)
        self.client.loop_stop()
        self.client.disconnect()


def test_packs_appear_in_home_assistant_follow_the_link_and_switch_mosfets(
    tmp_path, mqtt_broker, packs, gateway
) -> None:
    host, port = mqtt_broker
    run = uuid.uuid4().hex[:10]
    disc, top = f"ha{run}", f"tbms{run}"
    sims = packs(["ha-a", "ha.b"])  # a dot is legal in a battery id, not in a discovery node id
    bms = [
        {
            "battery_id": bid,
            "port": sims.url(bid),
            "source": "sim",
            "poll_interval_s": 0.5,
            "cadences_s": {"mos": 0, "cells": 1, "temps": 1, "status": 5, "faults": 1},
            "asleep_after_s": 1.5,
            "reconnect_max_s": 1.0,
        }
        for bid in sims.packs
    ]
    ha = HomeAssistantClient(host, port, disc, top)
    gw = gateway(
        gateway_config(
            "tok-unused-here",
            tmp_path / "state",
            [{"name": "wifi", "url": f"http://127.0.0.1:{free_port()}"}],  # no server: samples just queue
            bms,
            home_assistant={
                "broker": f"mqtt://{host}:{port}",
                "discovery_prefix": disc,
                "topic_prefix": top,
                "publish_interval_s": 0.2,
                "mosfet_switches": ["ha-a"],
                "client_id": f"gw-{run}",
            },
        )
    )
    try:
        gw.start()
        voltage_cfg = f"{disc}/sensor/tbms_ha-a/voltage/config"
        # the device carries what the BMS says about itself (read with 0x57 / 0x62 / 0x63)
        cfg = wait_for(
            "discovery with the BMS's serial",
            lambda: (c := ha.json(voltage_cfg)) and "serial_number" in c["device"] and c,
        )
        assert cfg["device_class"] == "voltage" and cfg["unit_of_measurement"] == "V"
        assert cfg["state_class"] == "measurement"
        assert cfg["device"]["manufacturer"] == "Daly" and cfg["device"]["model"].startswith("DL-SIM-8S")
        assert cfg["device"]["sw_version"]
        state_topic = cfg["state_topic"]
        assert [a["topic"] for a in cfg["availability"]] == [
            f"{top}/gw-{run}/status",
            f"{top}/ha-a/availability",
        ]
        assert cfg["availability_mode"] == "all"
        for a in cfg["availability"]:
            assert ha.text(a["topic"]) == "online"

        # every cell and sensor, once the gateway has read them; cells are there but disabled by default
        cell8 = wait_for("cell 8 entity", lambda: ha.json(f"{disc}/sensor/tbms_ha-a/cell_8/config"))
        assert cell8["enabled_by_default"] is False and cell8["unit_of_measurement"] == "mV"
        temp = ha.json(f"{disc}/sensor/tbms_ha-a/temp_2/config")
        assert temp["device_class"] == "temperature" and temp["unit_of_measurement"] == "°C"
        assert ha.json(f"{disc}/sensor/tbms_ha-a/cycles/config")["state_class"] == "total_increasing"
        assert ha.json(f"{disc}/sensor/tbms_ha-a/soc/config")["device_class"] == "battery"
        # the battery id with a dot is a valid node id; its MOSFETs are read-only (not in mosfet_switches)
        assert wait_for(
            "pack ha.b discovered", lambda: ha.json(f"{disc}/binary_sensor/tbms_ha_b/charge_mos/config")
        )
        assert ha.json(f"{disc}/switch/tbms_ha_b/charge_mos/config") is None
        switch = ha.json(f"{disc}/switch/tbms_ha-a/charge_mos/config")
        assert switch["command_topic"] == f"{top}/ha-a/charge_mos/set"

        state = wait_for("a full state", lambda: (s := ha.json(state_topic)) and s.get("cell_8_mv") and s)
        truth = sims.loop.call(lambda: sims.packs["ha-a"].battery.pack_voltage_v())
        assert abs(state["voltage_v"] - truth) < 0.5
        assert state["cell_delta_mv"] == state["cell_max_mv"] - state["cell_min_mv"]
        assert state["faults_text"] == "none" and state["link_state"] == "ok"
        assert state["charge_mos"] is True

        # a command to a pack without switches is ignored; the enabled pack's goes through the guarded write
        ha.publish(f"{top}/ha_b/discharge_mos/set", "OFF")
        ha.publish(f"{top}/ha-a/charge_mos/set", "OFF")
        wait_for("charge MOSFET off in HA", lambda: ha.json(state_topic)["charge_mos"] is False)
        assert sims.loop.call(lambda: sims.packs["ha-a"].battery.charge_mos) is False
        assert sims.loop.call(lambda: sims.packs["ha.b"].battery.discharge_mos) is True
        ha.publish(f"{top}/ha-a/charge_mos/set", "ON")
        wait_for("charge MOSFET back on", lambda: ha.json(state_topic)["charge_mos"] is True)
        assert "Home Assistant asks charge MOSFET OFF: done" in gw.log()

        # availability follows the BMS link: asleep → offline, awake → online
        sims.sleep("ha.b")
        wait_for("ha.b offline", lambda: ha.text(f"{top}/ha_b/availability") == "offline")
        assert ha.json(f"{top}/ha_b/state")["link_state"] == "asleep"
        assert ha.text(f"{top}/ha-a/availability") == "online"
        sims.wake("ha.b")
        wait_for("ha.b online again", lambda: ha.text(f"{top}/ha_b/availability") == "online")

        # Home Assistant restarting announces itself: the gateway sends the configs again
        ha.publish(voltage_cfg, b"", retain=True)
        wait_for("config cleared", lambda: ha.text(voltage_cfg) == "")
        ha.publish(f"{disc}/status", "online")
        wait_for("config sent again", lambda: ha.json(voltage_cfg) is not None)

        assert gw.stop() == 0
        assert ha.text(f"{top}/gw-{run}/status") == "offline"
        assert "Traceback" not in gw.log()
    finally:
        gw.stop()
        ha.close()


def test_state_payload_derives_power_cells_and_fault_texts() -> None:
    latest = {
        "voltage_v": 52.0,
        "current_a": -10.0,
        "cells_mv": [3300, 3310, 3290],
        "faults": ["cell_voltage_high_l1"],
    }
    s = state_payload(latest, "degraded")
    assert s["power_w"] == -520.0
    assert (s["cell_min_mv"], s["cell_max_mv"], s["cell_delta_mv"], s["cell_3_mv"]) == (3290, 3310, 20, 3290)
    assert s["faults_text"] and "cell_voltage_high_l1" not in s["faults_text"]  # readable text, not the name
    assert s["soc_pct"] is None and s["link_state"] == "degraded"  # unknown stays null ("unknown" in HA)
    # every template names a key the state carries
    keys = set(state_payload({"cells_mv": [1, 2], "temps_c": [20.0]}, "ok"))
    for cfg in sensors(2, 1, True).values():
        assert cfg["value_template"].split("value_json.")[1].split()[0] in keys


def test_home_assistant_config_errors_name_the_key() -> None:
    from trackingbms.gateway.config import ConfigError, GatewayConfig

    base = {
        "device_token": "tok-12345678",
        "state_dir": "/tmp/x",
        "uplinks": [{"name": "wifi", "url": "http://127.0.0.1:1"}],
        "bms": [{"battery_id": "p1", "port": "tcp://127.0.0.1:1"}],
    }
    with pytest.raises(
        ConfigError, match=r"home_assistant\.mosfet_switches: p9 is not a \[\[bms\]\] battery_id"
    ):
        GatewayConfig.from_dict({**base, "home_assistant": {"broker": "mqtt://h", "mosfet_switches": ["p9"]}})
    with pytest.raises(ConfigError, match=r"home_assistant\.broker: must start with mqtt://"):
        GatewayConfig.from_dict({**base, "home_assistant": {"broker": "http://h"}})
    cfg = GatewayConfig.from_dict({**base, "home_assistant": {"broker": "mqtt://h"}})
    assert (
        cfg.home_assistant is not None and cfg.home_assistant.mosfet_switches == []
    )  # no switches by default
