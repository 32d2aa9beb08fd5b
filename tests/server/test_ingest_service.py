"""The ingest service without HTTP (what the MQTT / JetStream workers will call): against a real database,
it stores a batch, rejects the bad sample alone, counts a re-send as a duplicate, publishes the newest sample
per battery to the tenant's live subscribers, and the stored sample reads back through the tenant's door."""

from __future__ import annotations

from trackingbms.server import provisioning as p
from trackingbms.server.hub import Hub
from trackingbms.server.ingest import IngestService

from .conftest import sample


async def test_ingest_service_stores_dedups_rejects_and_publishes(database_url: str) -> None:
    async with p.open_store(database_url) as store:
        tid = (await p.create_tenant(store, "svc"))["tenant_id"]
        await p.create_site(store, "svc", "depot")
        token = (await p.provision_device(store, "svc", "gw-1"))["token"]
        await p.create_battery(store, "svc", "depot", "svc-p1", device="gw-1")
        device = await store.device_for_token(token)
        assert device is not None
        hub = Hub()
        service = IngestService(store, hub)
        batch = [
            sample("svc-p1", 1, 20, voltage_v=53.1, cells_mv=[3300] * 16),
            sample("svc-p1", 2, 10, voltage_v=53.2, cells_mv=[3310] * 16),
            {"battery_id": "svc-p1", "seq": 3},  # no ts: can never be valid
            sample("other-pack", 4, 5),  # not assigned to this device
        ]
        with hub.subscribe(tid) as live, hub.subscribe(tid + 1) as other_tenant:
            res = await service.ingest(device, batch)
            assert (res.accepted, res.duplicates) == (2, 0)
            assert [r["index"] for r in res.rejected] == [2, 3]
            assert res.rejected[0]["error"].startswith("ts:")
            assert "not assigned" in res.rejected[1]["error"]
            msg = live.get_nowait()
            assert (msg["type"], msg["battery_id"], msg["sample"]["seq"]) == ("sample", "svc-p1", 2)
            assert other_tenant.empty()

            again = await service.ingest(device, batch[:2])
            assert (again.accepted, again.duplicates, again.rejected) == (0, 2, [])

        item = await store.tenant(tid).battery("svc-p1")
        assert item["latest"]["seq"] == 2 and item["latest"]["voltage_v"] == 53.2
        assert item["cell_count"] == 16
