"""The app's Bluetooth decoder (static/js/ble.js) in Chromium against vectors the Python codec makes: every
value decoded exactly as trackingbms.gateway.ble.codec decodes it, fragments reassembled at two MTUs, and
requests the app encodes read back by the gateway's decoder."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from trackingbms.gateway.ble import codec
from trackingbms.model import SOURCES, STATES, format_ts
from trackingbms.webapp import STATIC_DIR

from .conftest import CHROMIUM, CHROMIUM_ARGS, _need_browser

pytestmark = pytest.mark.browser
ORIGIN = "http://tbms.test"


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page()

        def serve(route: Any) -> None:
            path = route.request.url.removeprefix(ORIGIN)
            if path == "/":
                route.fulfill(body="<!doctype html><title>ble</title>", content_type="text/html")
            else:
                body = (STATIC_DIR / path.removeprefix("/static/")).read_bytes()
                route.fulfill(body=body, content_type="text/javascript")

        pg.route(f"{ORIGIN}/**", serve)
        pg.goto(f"{ORIGIN}/")
        yield pg
        browser.close()


def random_sample(rng: random.Random, cells: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    s: dict[str, Any] = {
        "seq": rng.randrange(1 << 48),
        "ts": format_ts(datetime.fromtimestamp(rng.randrange(0, 4_102_444_800_000) / 1000, UTC)),
    }
    maybe = {
        "source": lambda: rng.choice(SOURCES),
        "voltage_v": lambda: rng.randrange(65536) / 100,
        "current_a": lambda: rng.randrange(-32768, 32768) / 10,
        "soc_pct": lambda: rng.randrange(1001) / 10,
        "remaining_ah": lambda: rng.randrange(2**32) / 1000,
        "cycles": lambda: rng.randrange(65536),
        "state": lambda: rng.choice(STATES),
        "charge_mos": lambda: rng.random() < 0.5,
        "discharge_mos": lambda: rng.random() < 0.5,
        "charger_connected": lambda: rng.random() < 0.5,
        "load_connected": lambda: rng.random() < 0.5,
        "fault_code": lambda: rng.randrange(256),
        "cells_mv": lambda: [rng.randrange(2500, 3700) for _ in range(cells)],
        "temps_c": lambda: [float(rng.randrange(-40, 216)) for _ in range(rng.randrange(6))],
        "balancing": lambda: sorted(rng.sample(range(1, cells + 1), rng.randrange(3))),
        "faults": lambda: rng.sample(
            ["cell_voltage_high_l1", "soc_low_l2", "défaut ⚡", "温度"], rng.randrange(3)
        ),
        "errors": lambda: {"0x95": "timeout after 180 ms"} if rng.random() < 0.5 else {},
    }
    for name, make in maybe.items():
        if rng.random() < 0.8:
            s[name] = make()
    return s


def as_list(message: bytes, mtu: int) -> list[list[int]]:
    return [list(f) for f in codec.fragment(message, mtu)]


DECODE = """async ([kind, vectors]) => {
  const m = await import("/static/js/ble.js");
  return vectors.map((fragments) => {
    const r = new m.Reassembler();
    let out = null;
    for (const f of fragments) {
      const got = r.feed(new Uint8Array(f));
      if (got) out = kind === "reading" ? m.decodeReading(got) : m.decodeResponse(got);
    }
    return out;
  });
}"""


@pytest.mark.parametrize("mtu", [23, 185])
def test_the_app_decodes_readings_exactly_as_the_gateway_encodes_them(page: Any, mtu: int) -> None:
    rng = random.Random(mtu)
    samples = [random_sample(rng, cells) for cells in [16] * 20 + [4, 8, 24, 32] * 5]
    samples.append({"seq": 0, "ts": "1970-01-01T00:00:00.000Z"})  # nothing but identity (a failed poll)
    vectors = [as_list(codec.encode_reading(i % 3, s), mtu) for i, s in enumerate(samples)]
    decoded = page.evaluate(DECODE, ["reading", vectors])
    for i, (got, sample) in enumerate(zip(decoded, samples, strict=True)):
        index, expected = codec.decode_reading(codec.encode_reading(i % 3, sample))
        assert got == {"battery": index, "sample": expected}, i
        assert expected == sample  # and that is the sample itself: the grid is the wire's resolution


def test_the_app_decodes_responses_and_errors(page: Any) -> None:
    rng = random.Random(7)
    info = {
        "device": "cabin",
        "version": "0.9.0",
        "uplink": "wifi",
        "queue_depth": 1234,
        "wifi_settable": True,
        "uplinks": [
            {"name": "wifi", "url": "https://tbms.example.com"},
            {"name": "cellular", "url": "https://x"},
        ],
        "batteries": [
            {
                "battery_id": "pack-1",
                "link_state": "ok",
                "poll_interval_s": 1.0,
                "oldest_seq": 17,
                "next_seq": 99,
            },
            {
                "battery_id": "pack-2",
                "link_state": "asleep",
                "poll_interval_s": 2.5,
                "oldest_seq": 0,
                "next_seq": 0,
            },
        ],
    }
    page_body = {
        "battery": 1,
        "more": True,
        "next_seq": 1 << 41,
        "samples": [random_sample(rng, 16) for _ in range(5)],
    }
    responses = [
        codec.Response(1, codec.CMD_INFO, body=info),
        codec.Response(2, codec.CMD_HISTORY, body=page_body),
        codec.Response(3, codec.CMD_GET_READING, body={"battery": 0, "sample": random_sample(rng, 16)}),
        codec.Response(4, codec.CMD_SET_POLL, status=codec.PAIRING_REQUIRED, message="wrong pairing code"),
        codec.Response(5, codec.CMD_SET_UPLINK),
    ]
    vectors = [as_list(codec.encode_response(r), 23) for r in responses]
    decoded = page.evaluate(DECODE, ["response", vectors])
    for got, resp in zip(decoded, responses, strict=True):
        expected = codec.decode_response(codec.encode_response(resp))
        body = expected.body
        if expected.command == codec.CMD_GET_READING:
            body = {"battery": body["battery"], "sample": body["sample"]}
        assert got == {
            "request_id": expected.request_id,
            "command": expected.command,
            "status": codec.STATUS_NAMES[expected.status],
            "message": expected.message,
            "body": body,
        }


def test_requests_the_app_writes_are_what_the_gateway_reads(page: Any) -> None:
    requests = [
        {"command": codec.CMD_INFO, "request_id": 1},
        {
            "command": codec.CMD_HISTORY,
            "request_id": 2,
            "args": {"battery": 1, "from_seq": 2**47 + 5, "max_count": 0},
        },
        {
            "command": codec.CMD_SET_UPLINK,
            "request_id": 3,
            "pairing_code": "123456",
            "args": {"name": "", "url": "https://tbms.example.com/" + "é" * 200},
        },
        {
            "command": codec.CMD_SET_WIFI,
            "request_id": 4,
            "pairing_code": "123456",
            "args": {"ssid": "cabin", "psk": "pw"},
        },
        {
            "command": codec.CMD_SET_POLL,
            "request_id": 255,
            "pairing_code": "1",
            "args": {"battery": 255, "interval_ms": 3_600_000},
        },
    ]
    written = page.evaluate(
        """async (requests) => {
          const m = await import("/static/js/ble.js");
          return requests.map((r) => m.fragment(m.encodeRequest(r), 23).map((f) => Array.from(f)));
        }""",
        requests,
    )
    for fragments, sent in zip(written, requests, strict=True):
        r = codec.Reassembler()
        message = next(m for f in fragments if (m := r.feed(bytes(f))) is not None)
        got = codec.decode_request(message)
        expected = codec.Request(
            command=sent["command"],
            request_id=sent["request_id"],
            pairing_code=sent.get("pairing_code", ""),
            args=dict(sent.get("args", {})),
        )
        if expected.command == codec.CMD_SET_UPLINK:  # 255 bytes at most, cut on a character boundary
            raw = expected.args["url"].encode()[:255].decode("utf-8", "ignore")
            expected.args["url"] = raw
        assert got == expected


def test_bad_bytes_and_browsers_without_bluetooth_get_words_not_a_crash(page: Any) -> None:
    result = page.evaluate(
        """async () => {
          const m = await import("/static/js/ble.js");
          const tryIt = (bytes) => { try { m.decodeReading(new Uint8Array(bytes)); return "decoded"; }
                                     catch (e) { return (e instanceof m.PayloadError) + ": " + e.message; } };
          return {
            version: tryIt([2, 1]),
            short: tryIt([1, 1, 0, 0]),
            ios: m.bluetoothSupport({userAgent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"}),
            firefox: m.bluetoothSupport({userAgent: "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Firefox"}),
            chrome: m.bluetoothSupport({bluetooth: {}, userAgent: "Chrome"}, true),
            // this test page is plain http: a browser with Bluetooth still cannot use it here
            http: m.bluetoothSupport({bluetooth: {}, userAgent: "Chrome"}),
          };
        }"""
    )
    assert result["version"].startswith("true: format version 2")
    assert result["short"].startswith("true: message cut short")
    assert (
        result["ios"]["ok"] is False
        and result["ios"]["reason"] == "ios"
        and "iPhone" in result["ios"]["text"]
    )
    assert result["firefox"]["reason"] == "no-web-bluetooth"
    assert result["chrome"]["ok"] is True
    assert result["http"]["reason"] == "insecure" and "https://" in result["http"]["text"]
