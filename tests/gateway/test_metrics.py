"""The gateway's ``/metrics`` (local API), scraped from a real ``trackingbms gateway`` process polling
simulated packs and parsed with prometheus_client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .harness import free_port, gateway_config, wait_for


def scrape(url: str, **kw) -> dict[str, dict[tuple, float]]:
    resp = httpx.get(url + "/metrics", timeout=10, **kw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_gateway_metrics_show_queue_links_polls_and_uplink(tmp_path, packs, gateway) -> None:
    sims = packs(["m-1", "m-2"])
    bms = [
        {
            "battery_id": bid,
            "port": sims.url(bid),
            "source": "sim",
            "poll_interval_s": 0.3,
            "reconnect_max_s": 1.0,
        }
        for bid in sims.packs
    ]
    cfg = gateway_config(
        "tok-unused-here",
        tmp_path / "state",
        [
            {"name": "wifi", "url": f"http://127.0.0.1:{free_port()}"},
            {"name": "cellular", "url": "http://127.0.0.1:9"},
        ],
        bms,
    )
    cfg["local_api"]["token"] = "lan-secret"
    gw = gateway(cfg)
    gw.start()
    auth = {"headers": {"Authorization": "Bearer lan-secret"}}
    wait_for("local API up", lambda: httpx.get(gw.local_url + "/metrics", timeout=2).status_code == 401)

    def polled() -> dict | None:
        m = scrape(gw.local_url, **auth)
        counts = m.get("trackingbms_gateway_bms_poll_duration_seconds_count", {})
        return m if len(counts) == 2 and min(counts.values()) >= 3 else None

    m = wait_for("a few polls of both packs", polled)
    # no server answers: what was taken waits in the queue, and its age shows
    assert m["trackingbms_gateway_queue_samples"][()] > 0
    assert m["trackingbms_gateway_queue_oldest_age_seconds"][()] > 0
    assert m["trackingbms_gateway_uplink_active"][(("uplink", "wifi"),)] == 1
    assert m["trackingbms_gateway_uplink_active"][(("uplink", "cellular"),)] == 0
    assert m["trackingbms_gateway_bms_link_state"][(("battery_id", "m-1"), ("state", "ok"))] == 1
    assert m["trackingbms_gateway_bms_link_state"][(("battery_id", "m-1"), ("state", "disconnected"))] == 0
    assert m["trackingbms_gateway_bms_frames_total"][(("battery_id", "m-1"), ("result", "good"))] > 0
    inf = m["trackingbms_gateway_bms_poll_duration_seconds_bucket"][(("battery_id", "m-2"), ("le", "+Inf"))]
    assert inf == m["trackingbms_gateway_bms_poll_duration_seconds_count"][(("battery_id", "m-2"),)]
    assert 0 <= m["trackingbms_gateway_disk_budget_used_ratio"][()] <= 1
    assert list(m["trackingbms_gateway_info"].values()) == [1]

    sims.unplug("m-2")  # the BMS link drops: the metric says so
    key = (("battery_id", "m-2"), ("state", "disconnected"))
    wait_for(
        "m-2 disconnected",
        lambda: scrape(gw.local_url, **auth)["trackingbms_gateway_bms_link_state"][key] == 1,
    )
    assert gw.stop() == 0
