"""Mosquitto with the password and ACL files written by ``trackingbms admin``: devices are confined to their
own topics; a gateway over MQTT delivers every seq exactly once through a broker restart and a killed
ingest worker."""

from __future__ import annotations

import asyncio
import json
import re

import aiomqtt
import pytest

from gateway.harness import gateway_config, gateway_seqs, wait_for

pytestmark = pytest.mark.postgres

WORKER_PASSWORD = "worker-secret-123"


def provision_mqtt(cluster, mosquitto, device: str = "gw-1") -> dict:
    out = json.loads(
        cluster.admin(
            "mqtt-device",
            device,
            "-t",
            "acme",
            "--passwd",
            str(mosquitto.passwd),
            "--acl",
            str(mosquitto.acl),
            "--json",
        )
    )
    assert re.fullmatch(r"t\d+-" + device, out["username"])
    return out


def add_worker(cluster, mosquitto) -> None:
    cluster.admin_plain(
        "mqtt-worker",
        "ingest-1",
        "--passwd",
        str(mosquitto.passwd),
        "--acl",
        str(mosquitto.acl),
        "--password",
        WORKER_PASSWORD,
    )


async def _collect(port: int, user: str, password: str, topic: str, into: list, ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, username=user, password=password) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        async for message in client.messages:
            into.append((str(message.topic), bytes(message.payload)))


def test_device_acl_confines_each_device_to_its_own_topics(cluster, mosquitto) -> None:
    from trackingbms.server import provisioning as p

    asyncio.run(p.provision_device(cluster.db_url, "acme", "gw-2"))
    a = provision_mqtt(cluster, mosquitto, "gw-1")
    b = provision_mqtt(cluster, mosquitto, "gw-2")
    add_worker(cluster, mosquitto)
    mosquitto.start()

    async def scenario() -> tuple[list, list, bool]:
        seen: list = []
        b_acks: list = []
        ready, ready_b = asyncio.Event(), asyncio.Event()
        spy = asyncio.create_task(
            _collect(mosquitto.port, "ingest-1", WORKER_PASSWORD, "tbms/#", seen, ready)
        )
        # device B listens on its own ack topic
        b_task = asyncio.create_task(
            _collect(mosquitto.port, b["username"], b["token"], f"tbms/{b['username']}/ack", b_acks, ready_b)
        )
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.wait_for(ready_b.wait(), 10)
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto.port, username=a["username"], password=a["token"]
        ) as c:
            await c.publish(f"tbms/{a['username']}/samples", b'{"samples": [], "mine": 1}', qos=1)
            # A pretends to be B: samples, and a forged acknowledgement to B
            await c.publish(f"tbms/{b['username']}/samples", b'{"samples": [], "forged": 1}', qos=1)
            await c.publish(f"tbms/{b['username']}/ack", b'{"batch_id": "x", "accepted": 99}', qos=1)
            await c.publish(f"tbms/{a['username']}/samples", b'{"samples": [], "last": 1}', qos=1)
        wrong_password_refused = False
        try:
            async with aiomqtt.Client(
                "127.0.0.1", mosquitto.port, username=a["username"], password=b["token"]
            ):
                pass
        except aiomqtt.MqttError:
            wrong_password_refused = True
        for _ in range(50):
            if any(b'"last"' in p for _, p in seen):
                break
            await asyncio.sleep(0.1)
        spy.cancel()
        b_task.cancel()
        await asyncio.gather(spy, b_task, return_exceptions=True)
        return seen, b_acks, wrong_password_refused

    seen, b_acks, refused = asyncio.run(scenario())
    topics = [t for t, _ in seen]
    assert f"tbms/{a['username']}/samples" in topics  # the worker sees A's own samples
    assert not any(b"forged" in p for _, p in seen), seen  # A could not publish as B
    assert f"tbms/{b['username']}/samples" not in topics
    assert b_acks == []  # nor acknowledge in B's name
    assert refused  # B's token is not A's password


@pytest.mark.slow
def test_gateway_over_mqtt_every_seq_once_through_broker_restart_and_worker_kill(
    tmp_path, cluster, mosquitto, packs, gateway
) -> None:
    creds = provision_mqtt(cluster, mosquitto)
    add_worker(cluster, mosquitto)
    mosquitto.start()
    worker_url = f"mqtt://ingest-1@127.0.0.1:{mosquitto.port}"
    env = {"TRACKINGBMS_MQTT_PASSWORD": WORKER_PASSWORD}
    w1 = cluster.worker("--mqtt", worker_url, **env)
    w2 = cluster.worker("--mqtt", worker_url, **env)  # the shared subscription splits batches between them
    api, api_url = cluster.api()
    p = packs(["pack-1", "pack-2"])
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            creds["token"],
            state_dir,
            [
                {
                    "name": "mqtt",
                    "url": mosquitto.url,
                    "username": creds["username"],
                    "batch_max_age_s": 0.3,
                    "timeout_s": 5.0,
                    "batch_max_samples": 50,
                }
            ],
            [{"battery_id": b, "port": p.url(b), "source": "sim", "poll_interval_s": 0.2} for b in p.packs],
        )
    )
    gw.start()
    wait_for("samples stored over MQTT", lambda: len(cluster.seqs(api_url, "pack-1")) >= 10)
    # the broker goes away and comes back (persistent sessions, queued acks survive)
    mosquitto.stop()
    wait_for("gateway to notice", lambda: "unreachable" in gw.log(), 60)
    mosquitto.start()
    n = len(cluster.seqs(api_url, "pack-1"))
    wait_for("delivery to resume", lambda: len(cluster.seqs(api_url, "pack-1")) > n + 10, 90)
    # a worker dies mid-stream: its unacknowledged batches are sent again by the gateway
    w1.kill()
    n = len(cluster.seqs(api_url, "pack-1"))
    wait_for("the other worker to carry on", lambda: len(cluster.seqs(api_url, "pack-1")) > n + 10, 90)
    cluster.worker("--mqtt", worker_url, **env)
    # an API process dies: ingest does not depend on it; a new one serves the same data
    api.kill()
    _, api_url = cluster.api()
    # the packs stop (no new samples): whatever is queued must now arrive, once
    p.close()
    wait_for("the gateway queue to drain", lambda: gw.state()["gateway"]["queue_depth"] == 0, 120)
    gw.stop()
    sent = gateway_seqs(state_dir)
    for bid in ("pack-1", "pack-2"):
        stored = cluster.seqs(api_url, bid)
        assert len(stored) == len(set(stored)), f"{bid}: duplicates stored"
        assert sorted(stored) == sent[bid], f"{bid}: lost {sorted(set(sent[bid]) - set(stored))[:10]}"
    assert w2.proc is not None and w2.proc.poll() is None
