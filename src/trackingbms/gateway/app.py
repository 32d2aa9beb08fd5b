"""run_gateway: wires the pollers, the durable queue, the uplinks, the heartbeat and the local API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from trackingbms.gateway.config import GatewayConfig
from trackingbms.gateway.local import LocalApi
from trackingbms.gateway.poller import BmsPoller, SharedLinks
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.relay import RelayDesk
from trackingbms.gateway.settings import LocalSettings
from trackingbms.gateway.state import BatteryStatus, GatewayState
from trackingbms.gateway.uplinks import RemoteConfig, UplinkManager
from trackingbms.model import Sample

log = logging.getLogger("trackingbms.gateway")

HOUSEKEEPING_S = 60.0
FLUSH_ON_STOP_S = 5.0


def server_urls(config: GatewayConfig) -> list[str]:
    """Where the server's dashboard is, best first: ``local_api.server_url``, then the http(s) uplinks."""
    urls = [config.local_api.server_url.rstrip("/")] if config.local_api.server_url else []
    urls += [u.url for u in config.uplinks if u.url.startswith(("http://", "https://"))]
    return list(dict.fromkeys(urls))


class Gateway:
    """The running gateway; :func:`run_gateway` is the public entry point."""

    def __init__(self, config: GatewayConfig):
        # settings changed on site (Bluetooth) override gateway.toml (trackingbms.gateway.settings)
        self.settings = LocalSettings(config.state_dir)
        if self.settings.uplinks:
            config = config.model_copy(
                update={
                    "uplinks": [
                        u.model_copy(update={"url": self.settings.uplinks[u.name]})
                        if u.name in self.settings.uplinks
                        else u
                        for u in config.uplinks
                    ]
                }
            )
        self.config = config
        self.queue = DurableQueue(
            config.state_dir, disk_budget_mb=config.disk_budget_mb, local_history_h=config.local_history_h
        )
        self.state = GatewayState()
        for b in config.bms:
            self.state.batteries[b.battery_id] = BatteryStatus(
                battery_id=b.battery_id,
                port=b.port,
                poll_interval_s=b.poll_interval_s,
                cadences_s=dict(b.cadences_s),
            )
        self.remote = RemoteConfig(self.queue, self.state, config)
        for bid, every_s in self.settings.poll_interval_s.items():
            if bid in self.state.batteries and isinstance(every_s, int | float) and every_s > 0:
                self.state.batteries[bid].poll_interval_s = float(every_s)
        self.uplinks = UplinkManager(config, self.queue, self.state, self.remote)
        self.links = SharedLinks()  # boards on one port (an RS485 bus) share its link
        self.pollers = {
            b.battery_id: BmsPoller(b, self.queue, self.state, self._on_sample, self.links)
            for b in config.bms
        }
        self.home_assistant: Any = None
        if config.home_assistant is not None:
            from trackingbms.gateway.homeassistant import HomeAssistant

            self.home_assistant = HomeAssistant(
                config.home_assistant, self.state, lambda bid: self.pollers[bid].client
            )
        self.ble: Any = None
        if config.ble is not None and config.ble.enabled:
            from trackingbms.gateway.ble.service import BleService  # bumble itself loads in start()

            self.ble = BleService(config.ble, self)
        self.local: LocalApi | None = None
        if config.local_api.enabled:
            urls = server_urls(config)
            self.local = LocalApi(
                config.local_api,
                self.state,
                self.queue,
                self.status,
                [u.name for u in config.uplinks],
                server_urls=urls,
                ble_info=self.ble.public_info if self.ble is not None else None,
                # the phone relay uploads to the same server, over the phone's own network
                relay=RelayDesk(self.queue, config.device_token, urls, self.state),
            )

    # -- changes made on site (the Bluetooth service's configuration commands) ----------------------------

    async def set_uplink_url(self, name: str, url: str) -> str:
        """Point uplink ``name`` (the first when empty) at ``url`` now and for every later start; returns the
        uplink's name. KeyError / ValueError say what is wrong."""
        name = name or self.uplinks.uplinks[0].name
        cfg = await self.uplinks.set_url(name, url)
        self.settings.uplinks[name] = cfg.url
        await asyncio.to_thread(self.settings.save)
        return name

    async def set_poll_interval(self, battery_id: str | None, every_s: float) -> list[str]:
        """Poll ``battery_id`` (every battery when None) every ``every_s``, now and after restarts."""
        if every_s <= 0:
            raise ValueError("the poll interval must be above 0 s")
        ids = list(self.state.batteries) if battery_id is None else [battery_id]
        for bid in ids:
            self.state.batteries[bid].poll_interval_s = every_s
            self.settings.poll_interval_s[bid] = every_s
        await asyncio.to_thread(self.settings.save)
        return ids

    async def status(self) -> dict[str, Any]:
        body = await self.uplinks.heartbeat_body()
        body.pop("batteries", None)
        return body

    def _on_sample(self, sample: Sample) -> None:
        self.uplinks.notify()
        # "sample" is this sample as taken (maybe partial); "latest" the merged state the page shows
        latest = self.state.batteries[sample.battery_id].latest
        self.state.publish(
            {"type": "sample", "battery_id": sample.battery_id, "sample": sample.to_wire(), "latest": latest}
        )

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            with contextlib.suppress(Exception):
                await self.queue.ahousekeeping()  # on the queue's thread: may checkpoint and delete a lot

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "gateway starting: %d BMS, uplinks %s, state in %s (%d samples queued)",
            len(self.config.bms),
            ", ".join(f"{u.name}={u.url}" for u in self.config.uplinks),
            self.config.state_dir,
            await self.queue.apending_count(),
        )
        await self.queue.run(self.queue.enforce_budget)
        if self.local is not None:
            await self.local.start()
        if self.ble is not None:
            try:
                await self.ble.start()
            except OSError as exc:
                # the packs and the uplink matter more than Bluetooth: a missing dongle must not stop them
                log.error("Bluetooth off: %s (the gateway runs without it)", exc)
                await self.ble.stop()
                self.ble = None
                if self.local is not None:
                    self.local.ble_info = None
        pollers = [asyncio.create_task(p.run(), name=f"poll-{bid}") for bid, p in self.pollers.items()]
        extra = []
        if self.home_assistant is not None:
            extra.append(asyncio.create_task(self.home_assistant.run(), name="home-assistant"))
        tasks = [
            *pollers,
            *extra,
            asyncio.create_task(self.uplinks.run_sender(), name="sender"),
            asyncio.create_task(self.uplinks.run_heartbeat(), name="heartbeat"),
            asyncio.create_task(self.uplinks.run_failback_probe(), name="failback"),
            asyncio.create_task(self.uplinks.run_parked_retry(), name="parked-retry"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            # clean stop: no new samples, then a short chance to send what is queued (it stays on disk anyway)
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            left = await self.uplinks.flush(FLUSH_ON_STOP_S)
            if left:
                log.info("%d samples stay queued for the next start", left)
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            if self.ble is not None:
                await self.ble.stop()
            if self.local is not None:
                await self.local.stop()
            await self.uplinks.aclose()
            await self.queue.aclose()
            log.info("gateway stopped")


async def run_gateway(config: GatewayConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until ``stop`` is set (or forever); queued samples stay on disk for the next run."""
    await Gateway(config).run(stop or asyncio.Event())
