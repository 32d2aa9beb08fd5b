"""Gateway configuration: the example is valid, errors name the key, the CLI exits 2 without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from trackingbms.gateway import EXAMPLE_CONFIG, ConfigError, GatewayConfig


def minimal(tmp_path: Path) -> dict:
    return {
        "device_token": "tbms_dev_0123456789",
        "state_dir": str(tmp_path / "state"),
        "uplinks": [{"name": "wifi", "url": "http://127.0.0.1:9"}],
        "bms": [{"battery_id": "pack-1", "port": "tcp://127.0.0.1:1"}],
    }


def test_example_config_is_valid_and_commented() -> None:
    cfg = GatewayConfig.from_dict(tomllib.loads(EXAMPLE_CONFIG))
    assert [u.name for u in cfg.uplinks] == ["wifi"]  # one to edit; a second one is commented out
    # uncomment the first commented-out [[uplinks]] block (the cellular one)
    start = EXAMPLE_CONFIG.index("# [[uplinks]]")
    end = EXAMPLE_CONFIG.index("\n\n", start)
    block = re.sub(r"(?m)^# ", "", EXAMPLE_CONFIG[start:end])
    second = EXAMPLE_CONFIG[:start] + block + EXAMPLE_CONFIG[end:]
    cfg = GatewayConfig.from_dict(tomllib.loads(second))
    assert [u.name for u in cfg.uplinks] == ["wifi", "cellular"]
    assert cfg.uplinks[1].batch_max_samples > cfg.uplinks[0].batch_max_samples
    # no address: the client's default (0x80 over BLE, else 0x40)
    assert cfg.bms[0].address is None and cfg.bms[0].cadences_s["cells"] == 5
    assert EXAMPLE_CONFIG.count("#") > 20


def test_defaults(tmp_path: Path) -> None:
    cfg = GatewayConfig.from_dict(minimal(tmp_path))
    assert cfg.heartbeat_interval_s == 30
    assert cfg.bms[0].family == "a5" and cfg.bms[0].poll_interval_s == 1.0
    assert cfg.local_api.port == 8081


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d.pop("device_token"), "device_token", "required"),
        (lambda d: d["bms"][0].update(poll_interval_s=0), "bms[0].poll_interval_s", "greater than 0"),
        (lambda d: d["bms"][0].update(battery_id="bad id!"), "bms[0].battery_id", "pattern"),
        (lambda d: d["bms"][0].update(family="x9"), "bms[0].family", "unknown family 'x9'"),
        (lambda d: d["bms"][0].update(cadences_s={"cellz": 5}), "bms[0].cadences_s", "unknown command"),
        (lambda d: d["uplinks"][0].update(url="ftp://x"), "uplinks[0].url", "http://"),
        (lambda d: d["uplinks"][0].update(name="satellite"), "uplinks[0].name", "wifi"),
        (lambda d: d.update(uplinks=[]), "uplinks", "at least 1"),
        (lambda d: d["uplinks"][0].update(url="mqtts://broker:8883"), "uplinks[0]", "username: required"),
        (lambda d: d["uplinks"][0].update(username="t1/gw"), "uplinks[0].username", "pattern"),
        (lambda d: d.update(bms_list=[]), "bms_list", "unknown key"),
        (lambda d: d["bms"].append(dict(d["bms"][0])), "bms", "more than once"),
        (lambda d: d["bms"].append({**d["bms"][0], "battery_id": "b2"}), "bms", "its own board number"),
        (
            lambda d: d["bms"].append({**d["bms"][0], "battery_id": "b2", "board": 2, "family": "p81"}),
            "bms",
            "same family",
        ),
        (
            lambda d: d["bms"].extend(
                [
                    {**d["bms"][0], "battery_id": f"d{n}", "port": "/dev/x", "family": "d2", "board": n}
                    for n in (1, 2)
                ]
            ),
            "bms",
            "one per bus",
        ),
        (lambda d: d.update(local_api={"listen": "8081"}), "local_api.listen", "host:port"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change, key: str, words: str) -> None:
    data = minimal(tmp_path)
    change(data)
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_dict(data, origin="gw.toml")
    text = str(info.value)
    line = next((ln for ln in text.splitlines() if ln.strip().startswith(key + ":")), None)
    assert line is not None, text
    assert words in line, text


def test_mqtt_uplink(tmp_path: Path) -> None:
    from trackingbms.gateway.uplinks.mqtt import parse_brokers

    data = minimal(tmp_path)
    data["uplinks"].append({"name": "mqtt", "url": "mqtt://n1:1884,n2", "username": "t1-gw-1"})
    cfg = GatewayConfig.from_dict(data)
    assert cfg.uplinks[1].is_mqtt and not cfg.uplinks[0].is_mqtt
    assert parse_brokers(cfg.uplinks[1].url) == (False, [("n1", 1884), ("n2", 1883)])
    assert parse_brokers("mqtts://b") == (True, [("b", 8883)])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from trackingbms.cli import main; main()", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_example_config_round_trips(tmp_path: Path) -> None:
    out = run_cli("--example-config")
    assert out.returncode == 0
    assert out.stdout == EXAMPLE_CONFIG


def test_cli_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(EXAMPLE_CONFIG.replace("poll_interval_s = 1.0", "poll_interval_s = -1"))
    out = run_cli("-c", str(path))
    assert out.returncode == 2
    assert "bms[0].poll_interval_s" in out.stderr and "greater than 0" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout

    path.write_text("device_token = [")
    out = run_cli("-c", str(path))
    assert out.returncode == 2 and "not valid TOML" in out.stderr and "Traceback" not in out.stderr

    out = run_cli("-c", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "cannot read" in out.stderr
