"""The gateway's GATT peripheral on bumble: live readings, history pages by seq, commands (docs/ble.md).

bumble rather than BlueZ/D-Bus: it drives a USB dongle or an HCI socket with its own host stack (no
bluetoothd, no D-Bus policy to install on a gateway), and runs unchanged on a virtual controller in the tests.
It is imported in :meth:`BleService.start` only, so a gateway without ``[ble]`` never loads it.

:class:`Commands` answers requests and knows nothing of bumble; :class:`BleService` is the radio glue: one
:class:`~trackingbms.gateway.ble.codec.Reassembler` per connection for the writes, responses and live
readings cut into fragments at each connection's own ATT MTU.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from trackingbms import __version__
from trackingbms.gateway.ble import codec
from trackingbms.gateway.ble.codec import PayloadError, Request, Response
from trackingbms.gateway.ble.pairing import PairingGuard, load_or_create
from trackingbms.gateway.config import BleConfig

if TYPE_CHECKING:
    from trackingbms.gateway.app import Gateway

log = logging.getLogger("trackingbms.gateway.ble")

WIFI_COMMAND_TIMEOUT_S = 60.0


#: ``virtual:HOST:PORT``: no Bluetooth hardware, a virtual radio (see :func:`_virtual_device`)
VIRTUAL = "virtual:"


async def _virtual_device(name: str, address: str, spec: str) -> tuple[Any, Any]:
    """The gateway's host on a virtual controller of a bumble ``LocalLink`` whose second controller is
    reached over HCI on TCP at HOST:PORT: ``trackingbms direct ble://<name>?hci=tcp-client:HOST:PORT``
    connects through it, one client at a time. For trying Bluetooth direct mode with the simulator and
    no radio (README). The same construction as the simulator's ``VirtualRadio``, which the gateway may not
    import (layers)."""
    from bumble.controller import Controller
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.host import Host
    from bumble.link import LocalLink
    from bumble.transport.common import AsyncPipeSink
    from bumble.transport.tcp_server import open_tcp_server_transport

    host, sep, port = spec.removeprefix(VIRTUAL).rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected virtual:HOST:PORT, e.g. virtual:127.0.0.1:7510")
    link = LocalLink()
    transport = await open_tcp_server_transport(f"{host or '127.0.0.1'}:{port}")
    Controller("client", host_source=transport.source, host_sink=transport.sink, link=link)
    ctrl = Controller(name, link=link)
    return Device(name=name, address=Address(address), host=Host(ctrl, AsyncPipeSink(ctrl))), transport


def device_name(cfg: BleConfig) -> str:
    return cfg.device or (socket.gethostname().split(".")[0][:16] or "gateway")


def static_address(name: str) -> str:
    """A static random address derived from the name: stable across restarts, so phones find it again."""
    raw = bytearray(hashlib.sha256(name.encode()).digest()[:6])
    raw[0] |= 0xC0  # the two top bits of a static random address are 1
    return ":".join(f"{b:02X}" for b in raw)


class Commands:
    """Requests in, responses out: the service's logic without the radio."""

    def __init__(self, gateway: Gateway, cfg: BleConfig, guard: PairingGuard) -> None:
        self.gateway = gateway
        self.cfg = cfg
        self.guard = guard

    @property
    def battery_ids(self) -> list[str]:
        return list(self.gateway.state.batteries)

    def _battery(self, index: int) -> str | None:
        ids = self.battery_ids
        return ids[index] if 0 <= index < len(ids) else None

    async def handle(self, req: Request, mtu: int) -> Response:
        resp = Response(request_id=req.request_id, command=req.command)
        try:
            if req.command not in codec.COMMAND_NAMES:
                return _error(resp, codec.UNKNOWN_COMMAND, f"unknown command 0x{req.command:02x}")
            if req.command in codec.CONFIG_COMMANDS:
                if self.guard.locked_for_s() > 0:
                    return _error(
                        resp,
                        codec.LOCKED_OUT,
                        f"too many wrong pairing codes: try again in {self.guard.locked_for_s():.0f} s",
                    )
                if not req.pairing_code:
                    return _error(resp, codec.PAIRING_REQUIRED, "this command needs the pairing code")
                if not self.guard.check(req.pairing_code):
                    log.warning("Bluetooth: wrong pairing code for %s", codec.COMMAND_NAMES[req.command])
                    return _error(resp, codec.PAIRING_REQUIRED, "wrong pairing code")
            return await getattr(self, "_" + codec.COMMAND_NAMES[req.command])(req, resp, mtu)
        except Exception as exc:  # the client gets a line, the gateway keeps serving
            log.exception("Bluetooth: %s failed", codec.COMMAND_NAMES.get(req.command, req.command))
            return _error(resp, codec.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    async def info(self) -> dict[str, Any]:
        gw = self.gateway
        status = await gw.queue.astatus()
        batteries = []
        for bid, st in gw.state.batteries.items():
            oldest, nxt = await gw.queue.run(gw.queue.seq_range, bid)
            batteries.append(
                {
                    "battery_id": bid,
                    "link_state": st.link_state,
                    "poll_interval_s": st.poll_interval_s,
                    "oldest_seq": oldest or 0,
                    "next_seq": nxt or 0,
                }
            )
        return {
            "device": device_name(self.cfg),
            "version": __version__,
            "uplink": gw.state.uplink,
            "queue_depth": status["queue_depth"],
            "wifi_settable": bool(self.cfg.wifi_command),
            "uplinks": [{"name": u.name, "url": u.cfg.url} for u in gw.uplinks.uplinks],
            "batteries": batteries,
        }

    async def _info(self, req: Request, resp: Response, mtu: int) -> Response:
        resp.body = await self.info()
        return resp

    async def _get_reading(self, req: Request, resp: Response, mtu: int) -> Response:
        bid = self._battery(req.args["battery"])
        if bid is None:
            return _error(resp, codec.NOT_FOUND, f"no battery {req.args['battery']} (see info)")
        latest = self.gateway.state.batteries[bid].latest
        if latest is None:
            return _error(resp, codec.NOT_FOUND, f"{bid}: no reading yet")
        resp.body = {"battery": req.args["battery"], "sample": latest}
        return resp

    async def _history(self, req: Request, resp: Response, mtu: int) -> Response:
        index = req.args["battery"]
        bid = self._battery(index)
        if bid is None:
            return _error(resp, codec.NOT_FOUND, f"no battery {index} (see info)")
        want = max(1, min(req.args["max_count"] or self.cfg.page_max, self.cfg.page_max))
        q = self.gateway.queue
        samples, more = await q.run(q.page_by_seq, bid, req.args["from_seq"], want)
        # the page must fit the 128 fragments of one message at this link's MTU: shorten it if not
        while True:
            resp.body = {
                "battery": index,
                "more": more,
                "next_seq": (samples[-1]["seq"] + 1) if samples else req.args["from_seq"],
                "samples": samples,
            }
            if len(samples) <= 1 or len(codec.encode_response(resp)) <= codec.max_message(mtu):
                return resp
            samples = samples[: len(samples) // 2]
            more = True

    async def _set_uplink(self, req: Request, resp: Response, mtu: int) -> Response:
        try:
            name = await self.gateway.set_uplink_url(req.args["name"], req.args["url"])
        except KeyError:
            names = ", ".join(u.name for u in self.gateway.uplinks.uplinks)
            return _error(
                resp, codec.NOT_FOUND, f"no uplink named {req.args['name']!r} (this gateway has {names})"
            )
        except ValidationError as exc:
            why = exc.errors()[0]["msg"].removeprefix("Value error, ")
            return _error(resp, codec.INVALID_VALUE, f"url: {why}")
        log.warning("Bluetooth: uplink %s set to %s", name, req.args["url"])
        return resp

    async def _set_poll(self, req: Request, resp: Response, mtu: int) -> Response:
        index, every_s = req.args["battery"], req.args["interval_ms"] / 1000
        bid = None if index == codec.ALL_BATTERIES else self._battery(index)
        if index != codec.ALL_BATTERIES and bid is None:
            return _error(resp, codec.NOT_FOUND, f"no battery {index} (see info)")
        if not 0.1 <= every_s <= 86400:
            return _error(resp, codec.INVALID_VALUE, "poll interval must be 0.1 s to 1 day")
        ids = await self.gateway.set_poll_interval(bid, every_s)
        log.warning("Bluetooth: poll interval of %s set to %g s", ", ".join(ids), every_s)
        return resp

    async def _set_wifi(self, req: Request, resp: Response, mtu: int) -> Response:
        if not self.cfg.wifi_command:
            return _error(
                resp, codec.UNSUPPORTED, "this gateway cannot set Wi-Fi (no [ble] wifi_command configured)"
            )
        if not req.args["ssid"]:
            return _error(resp, codec.INVALID_VALUE, "ssid: empty")
        env = {**os.environ, "TBMS_WIFI_SSID": req.args["ssid"], "TBMS_WIFI_PSK": req.args["psk"]}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.cfg.wifi_command,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return _error(resp, codec.INTERNAL_ERROR, f"wifi_command: {exc.strerror or exc}")
        try:
            async with asyncio.timeout(WIFI_COMMAND_TIMEOUT_S):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            return _error(
                resp, codec.INTERNAL_ERROR, f"wifi_command still running after {WIFI_COMMAND_TIMEOUT_S:.0f} s"
            )
        if proc.returncode != 0:
            last = (out.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            return _error(resp, codec.INVALID_VALUE, f"wifi_command failed ({proc.returncode}): {last}"[:200])
        log.warning("Bluetooth: Wi-Fi set to %r", req.args["ssid"])
        return resp


def _error(resp: Response, status: int, message: str) -> Response:
    resp.status = status
    resp.message = message
    resp.body = {}
    return resp


class BleService:
    """The peripheral. ``device``: an already made bumble ``Device`` (tests on a virtual radio); otherwise
    one is opened on ``cfg.transport``."""

    def __init__(self, cfg: BleConfig, gateway: Gateway, *, device: Any = None) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.name = codec.NAME_PREFIX + device_name(cfg)
        self.address = (cfg.address or static_address(self.name)).upper()
        code, created = load_or_create(gateway.config.state_dir)
        if created:
            # shown once here (and in the gateway-served app): configuring over Bluetooth needs it
            log.warning(
                "Bluetooth pairing code: %s (configuration over Bluetooth needs it; also in %s and in "
                "the gateway's app on its LAN address)",
                code,
                gateway.config.state_dir / "ble-pairing-code",
            )
        self.guard = PairingGuard(code)
        self.commands = Commands(gateway, cfg, self.guard)
        self.device = device
        self._transport: Any = None
        self._advertising: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._assemblers: dict[int, codec.Reassembler] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self.notifications = 0
        self.live_sent = 0

    def public_info(self) -> dict[str, Any]:
        """For the gateway-served app (``/local/v1/state``, behind the LAN token when one is set)."""
        return {"name": self.name, "address": self.address, "pairing_code": self.guard.code}

    async def start(self) -> None:
        try:
            from bumble.core import UUID, AdvertisingData
            from bumble.device import Device
            from bumble.gatt import Characteristic, CharacteristicValue, Service
            from bumble.hci import Address
            from bumble.transport import open_transport
        except ImportError:
            raise OSError("the Bluetooth service needs bumble: pip install 'trackingbms[ble]'") from None
        if self.device is None and self.cfg.transport.startswith(VIRTUAL):
            try:
                self.device, self._transport = await _virtual_device(
                    self.name, self.address, self.cfg.transport
                )
            except (OSError, ValueError) as exc:
                raise OSError(f"[ble] cannot open the virtual radio {self.cfg.transport!r}: {exc}") from None
        if self.device is None:
            try:
                async with asyncio.timeout(15):
                    self._transport = await open_transport(self.cfg.transport)
            except (OSError, TimeoutError, ValueError) as exc:
                raise OSError(
                    f"[ble] cannot open the Bluetooth controller {self.cfg.transport!r}: {exc or 'timed out'}"
                ) from None
            self.device = Device.with_hci(
                self.name, Address(self.address), self._transport.source, self._transport.sink
            )
        device = self.device
        props = Characteristic.Properties
        self.live_char = Characteristic(codec.LIVE_UUID, props.NOTIFY, Characteristic.READABLE, b"")
        self.response_char = Characteristic(codec.RESPONSE_UUID, props.NOTIFY, Characteristic.READABLE, b"")
        self.command_char = Characteristic(
            codec.COMMAND_UUID,
            props.WRITE | props.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_write),
        )
        device.add_service(
            Service(codec.SERVICE_UUID, [self.live_char, self.command_char, self.response_char])
        )
        device.on("connection", self._on_connection)
        async with asyncio.timeout(15):
            await device.power_on()
        # the name in the advertisement (phones filter on it), the 128-bit service UUID in the scan response
        # (both would not fit the 31 bytes of one legacy advertisement)
        adv = AdvertisingData(
            [
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
            ]
        )
        scan = AdvertisingData(
            [(AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, bytes(UUID(codec.SERVICE_UUID)))]
        )
        self._advertising = {
            "advertising_data": bytes(adv),
            "scan_response_data": bytes(scan),
            "auto_restart": True,
        }
        await device.start_advertising(**self._advertising)
        self._spawn(self._live_loop())
        log.info("Bluetooth: advertising %s (%s) on %s", self.name, self.address, self.cfg.transport)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.device is not None:
            with contextlib.suppress(Exception):
                await self.device.stop_advertising()
            for connection in list(self.device.connections.values()):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await connection.disconnect()
            if self._transport is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await self.device.power_off()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                server = getattr(self._transport, "server", None)
                if server is not None:  # a virtual radio's TCP server: stop accepting clients
                    server.close()
                res = self._transport.close()
                if asyncio.iscoroutine(res):
                    await res

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_connection(self, connection: Any) -> None:
        log.info("Bluetooth: %s connected", connection.peer_address)
        handle = connection.handle
        self._assemblers[handle] = codec.Reassembler()
        self._locks[handle] = asyncio.Lock()

        def gone(*_: Any) -> None:
            self._assemblers.pop(handle, None)
            self._locks.pop(handle, None)

        connection.on("disconnection", gone)
        # a connection ends legacy advertising: advertise again so that a second phone (or the laptop) can
        # connect while the first stays (controllers that cannot take one more connection refuse quietly)
        self._spawn(self._advertise_again())

    async def _advertise_again(self) -> None:
        assert self.device is not None
        with contextlib.suppress(Exception):
            if not self.device.is_advertising:
                await self.device.start_advertising(**self._advertising)

    def _on_write(self, connection: Any, value: bytes) -> None:
        assembler = self._assemblers.setdefault(connection.handle, codec.Reassembler())
        message = assembler.feed(bytes(value))
        if message is not None:
            self._spawn(self._answer(connection, message))

    async def _answer(self, connection: Any, message: bytes) -> None:
        lock = self._locks.setdefault(connection.handle, asyncio.Lock())
        async with lock:  # one request at a time per connection: responses never interleave
            try:
                req = codec.decode_request(message)
            except PayloadError as exc:
                request_id = message[2] if len(message) > 2 else 0
                command = message[3] if len(message) > 3 else 0
                status = codec.BAD_VERSION if "version" in str(exc) else codec.BAD_REQUEST
                resp = Response(request_id, command, status, str(exc))
            else:
                resp = await self.commands.handle(req, connection.att_mtu)
            await self._send(connection, self.response_char, codec.encode_response(resp))

    async def _send(self, connection: Any, characteristic: Any, message: bytes) -> None:
        assert self.device is not None
        for part in codec.fragment(message, connection.att_mtu):
            await self.device.notify_subscriber(connection, characteristic, part)
            self.notifications += 1

    async def _live_loop(self) -> None:
        """Every sample the pollers take, as the merged latest reading of its battery, to every subscriber."""
        state = self.gateway.state
        q = state.subscribe()
        try:
            while True:
                event = await q.get()
                if event.get("type") != "sample" or self.device is None or not self.device.connections:
                    continue
                ids = list(state.batteries)
                bid = event["battery_id"]
                latest = event.get("latest") or event.get("sample")
                if bid not in ids or not latest:
                    continue
                try:
                    message = codec.encode_reading(ids.index(bid), latest)
                except PayloadError as exc:
                    log.warning("Bluetooth: %s seq %s not sent: %s", bid, latest.get("seq"), exc)
                    continue
                for connection in list(self.device.connections.values()):
                    with contextlib.suppress(Exception):  # a phone leaving mid-send is not our failure
                        await self._send(connection, self.live_char, message)
                self.live_sent += 1
        finally:
            state.unsubscribe(q)
