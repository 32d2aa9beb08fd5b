"""A 3-node NATS JetStream cluster with its MQTT listener: gateways publish over MQTT, samples land in a
replicated stream (R3), ingest workers store them in PostgreSQL and acknowledge after the commit. Every
seq arrives exactly once through a NATS node killed, a worker SIGKILLed mid-batch and an API process killed.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.harness import gateway_config, gateway_seqs, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BIDS = ["pack-1", "pack-2"]


def test_every_seq_once_through_nats_node_worker_and_api_kills(
    tmp_path, cluster, nats_cluster, packs, gateway
) -> None:
    from trackingbms.server import provisioning as p

    token = asyncio.run(p.new_device_token(cluster.db_url, "acme", "gw-1"))["token"]
    w1 = cluster.worker("--nats", nats_cluster.nats_urls)
    w2 = cluster.worker("--nats", nats_cluster.nats_urls)
    wait_for("the stream", lambda: nats_cluster.stream_info().config.num_replicas == 3, 60)
    api, api_url = cluster.api()
    sims = packs(BIDS)
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            token,
            state_dir,
            [
                {
                    "name": "mqtt",
                    "url": nats_cluster.mqtt_url,  # all three MQTT listeners: tried in turn
                    "username": "t1-gw-1",
                    "batch_max_age_s": 0.3,
                    "batch_max_samples": 50,
                    "timeout_s": 5.0,
                }
            ],
            [
                {"battery_id": b, "port": sims.url(b), "source": "sim", "poll_interval_s": 0.2}
                for b in sims.packs
            ],
        )
    )
    gw.start()

    def stored(bid: str = "pack-1") -> int:
        return len(cluster.seqs(api_url, bid))

    wait_for("samples stored through JetStream", lambda: stored() >= 10, 90)
    # the node the gateway talks to dies (SIGKILL); the stream has two more replicas
    nats_cluster.kill(0)
    n = stored()
    wait_for("delivery to resume without node 0", lambda: stored() > n + 10, 120)
    nats_cluster.start(0)
    # a worker dies holding unacknowledged messages: JetStream redelivers them to the other
    w1.kill()
    n = stored()
    wait_for("the other worker to carry on", lambda: stored() > n + 10, 120)
    cluster.worker("--nats", nats_cluster.nats_urls)
    # an API process dies: ingest never needed it; another serves the same data
    api.kill()
    _, api_url = cluster.api()
    sims.close()
    wait_for("the gateway queue to drain", lambda: gw.state()["gateway"]["queue_depth"] == 0, 180)
    gw.stop()
    sent = gateway_seqs(state_dir)
    for bid in ("pack-1", "pack-2"):
        got = cluster.seqs(api_url, bid)
        assert len(got) == len(set(got)), f"{bid}: duplicates stored"
        assert sorted(got) == sent[bid], f"{bid}: lost {sorted(set(sent[bid]) - set(got))[:10]}"
    assert w2.proc is not None and w2.proc.poll() is None
    info = nats_cluster.stream_info()
    assert info.config.num_replicas == 3
