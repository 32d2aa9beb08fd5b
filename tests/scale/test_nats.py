"""A 3-node NATS JetStream cluster with its MQTT listener: gateways publish over MQTT, samples land in a
replicated stream (R3), ingest workers store them in PostgreSQL and acknowledge after the commit. Every
seq arrives exactly once through a NATS node killed, a worker SIGKILLed mid-batch and an API process killed.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.harness import gateway_config, gateway_seqs, wait_for

pytestmark = pytest.mark.postgres
BIDS = ["pack-1", "pack-2"]


@pytest.mark.slow
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


def test_nats_device_permissions_written_by_admin_hold(tmp_path, cluster) -> None:
    """With the users file `trackingbms admin mqtt-device --nats-users` writes, a device publishes only its
    own samples (not another device's, nor an acknowledgement) and a wrong token is refused."""
    import aiomqtt
    import orjson

    from scale.harness import NatsCluster

    from .test_mosquitto import _collect

    users = tmp_path / "tbms-users.conf"
    worker_pass = "worker-secret-123"
    cluster.admin_plain("mqtt-worker", "ingest-1", "--nats-users", str(users), "--password", worker_pass)
    from trackingbms.server import provisioning as p

    asyncio.run(p.provision_device(cluster.db_url, "acme", "gw-2"))
    a, b = (
        orjson.loads(cluster.admin("mqtt-device", dev, "-t", "acme", "--nats-users", str(users), "--json"))
        for dev in ("gw-1", "gw-2")
    )
    nats = NatsCluster(tmp_path / "nats1", size=1, users_file=users)
    nats.admin_credentials = {"user": "ingest-1", "password": worker_pass}
    nats.start()
    worker = cluster.worker(
        *("--nats", f"nats://ingest-1@127.0.0.1:{nats.client_ports[0]}", "--replicas", "1"),
        TRACKINGBMS_MQTT_PASSWORD=worker_pass,
    )
    wait_for("the worker to create the stream", nats.stream_info, 60)
    port = nats.mqtt_ports[0]
    try:

        async def scenario() -> tuple[list, bool]:
            acks: list = []
            ready = asyncio.Event()
            listener = asyncio.create_task(
                _collect(port, b["username"], b["token"], f"tbms/{b['username']}/ack", acks, ready)
            )
            await asyncio.wait_for(ready.wait(), 30)
            async with aiomqtt.Client("127.0.0.1", port, username=a["username"], password=a["token"]) as c:
                # as B: samples and a forged acknowledgement; both refused by the server
                forged = {"batch_id": "f", "samples": []}
                await c.publish(f"tbms/{b['username']}/samples", orjson.dumps(forged), qos=1)
                await c.publish(f"tbms/{b['username']}/ack", b'{"batch_id": "x", "accepted": 9}', qos=1)
            # B's own batch is stored and acknowledged: the listener works, so silence above means refusal
            async with aiomqtt.Client("127.0.0.1", port, username=b["username"], password=b["token"]) as c:
                own = {"batch_id": "own", "samples": []}
                await c.publish(f"tbms/{b['username']}/samples", orjson.dumps(own), qos=1)
            for _ in range(300):
                if any(b'"own"' in p for _, p in acks):
                    break
                await asyncio.sleep(0.1)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            refused = False
            try:
                async with aiomqtt.Client("127.0.0.1", port, username=a["username"], password=b["token"]):
                    pass
            except aiomqtt.MqttError:
                refused = True
            return acks, refused

        acks, refused = asyncio.run(scenario())
    finally:
        worker.stop()
        nats.stop()
    payloads = [p for _, p in acks]
    assert any(b'"own"' in p for p in payloads), payloads  # B hears its own acknowledgement ...
    assert not any(b'"f"' in p or b'"x"' in p for p in payloads), payloads  # ... and nothing A forged
    assert refused
