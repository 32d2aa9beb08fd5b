"""A simulated Daly Bluetooth module: a bumble GATT peripheral on a virtual controller.

The peripheral exposes the Daly UART-over-GATT service (``fff0``: notify ``fff1``, write ``fff2``; or
the newer ``ff00`` layout), takes requests written to the write characteristic, answers through the
pack's protocol responder, and sends each reply as a byte stream cut into notifications of ``chunk``
bytes (20 = the payload of the default ATT MTU), so frames split across notifications as on real
modules (reference Q12). The request side is a byte stream as well: the responder's request parser
cuts it.

The peripheral's controller sits on a bumble :class:`~bumble.link.LocalLink` with a second virtual
controller that clients reach over HCI: :attr:`BleEndpoint.hci` is a ``tcp-client:127.0.0.1:PORT``
transport spec, and :attr:`BleEndpoint.url` the ``ble://ADDRESS?hci=...`` a client opens, in this
process or another one. Only the radio is virtual: advertising, connection, GATT discovery,
subscriptions and notifications run through bumble's real host stack on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from trackingbms.sim.pack import Bus, SimulatedPack
from trackingbms.sim.responder import Emission

DALY_LAYOUTS = {"fff0": ("FFF0", "FFF1", "FFF2"), "ff00": ("FF00", "FF01", "FF02")}


class StreamResponder(Protocol):
    """What the peripheral needs from a protocol: cut requests from bytes, answer one request."""

    def feed(self, data: bytes) -> list[bytes]: ...

    def respond(self, request: bytes) -> list[Emission]: ...


class BusResponder:
    """Requests in the packs' own protocol (A5, D2 or 0x81, ``Quirks.protocol``) answered by the bus."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.parser = bus.request_parser()

    def feed(self, data: bytes) -> list[bytes]:
        return self.parser.feed(data)

    def respond(self, request: bytes) -> list[Emission]:
        return self.bus.respond(request)


class BleEndpoint:
    """A virtual Daly BLE module; see the module docstring."""

    def __init__(self) -> None:
        self.address = ""
        self.name = ""
        self.hci = ""
        self.packs: list[SimulatedPack] = []
        self.layout = "fff0"
        self.notifications = 0
        #: notification payload size → count (20-byte notifications carry parts of frames)
        self.notification_sizes: Counter[int] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: list[Callable[[], Any]] = []

    @property
    def url(self) -> str:
        return f"ble://{self.address}?hci={self.hci}"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                res = close()
                if asyncio.iscoroutine(res):
                    await res
        self._closers.clear()

    async def __aenter__(self) -> BleEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class VirtualRadio:
    """A bumble :class:`~bumble.link.LocalLink` with one virtual controller reachable over HCI on TCP
    (:attr:`hci`, a bumble transport spec such as ``tcp-client:127.0.0.1:PORT``) for a host in this or
    another process, and :meth:`local_device` for peripherals whose host runs in this process. Reusable
    for any GATT peripheral under test (the gateway's service for phones, too)."""

    def __init__(self, link: Any, hci: str, transport: Any) -> None:
        self.link = link
        self.hci = hci
        self._transport = transport

    def local_device(self, name: str, address: str) -> Any:
        """A bumble ``Device`` on its own virtual controller on this radio (call ``power_on`` on it)."""
        from bumble.controller import Controller
        from bumble.device import Device
        from bumble.hci import Address
        from bumble.host import Host
        from bumble.transport.common import AsyncPipeSink

        ctrl = Controller(name, link=self.link)
        return Device(name=name, address=Address(address), host=Host(ctrl, AsyncPipeSink(ctrl)))

    async def close(self) -> None:
        self._transport.server.close()  # stop accepting hosts
        with contextlib.suppress(Exception):
            res = self._transport.close()
            if asyncio.iscoroutine(res):
                await res


async def virtual_radio(host: str = "127.0.0.1", port: int = 0) -> VirtualRadio:
    """Open a :class:`VirtualRadio`; ``port`` 0 = any free one."""
    from bumble.controller import Controller
    from bumble.link import LocalLink
    from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

    link = LocalLink()
    # the host-side controller speaks H4 over TCP, as a USB or serial dongle does over its wire
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    transport = await open_tcp_server_transport_with_socket(sock)
    Controller("host", host_source=transport.source, host_sink=transport.sink, link=link)
    return VirtualRadio(link, f"tcp-client:{host}:{sock.getsockname()[1]}", transport)


async def serve_ble(
    packs: SimulatedPack | Sequence[SimulatedPack] | Bus,
    *,
    responder: StreamResponder | None = None,
    name: str | None = None,
    address: str = "C0:DA:17:00:00:01",
    layout: str = "fff0",
    chunk: int = 20,
    notify_interval_s: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> BleEndpoint:
    """Advertise a Daly BLE module for ``packs``, speaking their protocol (A5, or D2 as the newer built-in
    modules do: ``Quirks(protocol="d2")``).

    ``port`` = the TCP port of the client-side HCI (0 = any free one). ``notify_interval_s`` spaces the
    notifications of one reply (a connection interval; 0 = back to back).
    """
    from bumble.gatt import Characteristic, CharacteristicValue, Service

    if layout not in DALY_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(DALY_LAYOUTS)}, got {layout!r}")
    bus = Bus.of(packs)
    proto = responder or BusResponder(bus)
    ep = BleEndpoint()
    ep.packs = bus.packs
    ep.layout = layout
    ep.address = address
    ep.name = name or f"DL-SIM-{bus.packs[0].id}"[:29]

    radio = await virtual_radio(host, port)
    ep._closers.append(radio.close)
    ep.hci = radio.hci
    device = radio.local_device(ep.name, address)  # the BMS side: its host runs in this process
    service_uuid, notify_uuid, write_uuid = DALY_LAYOUTS[layout]
    loop = asyncio.get_running_loop()

    notify_char = Characteristic(notify_uuid, Characteristic.Properties.NOTIFY, Characteristic.READABLE, b"")

    async def send_reply(emissions: list[Emission]) -> None:
        if not emissions:
            return
        start = loop.time()
        # one reply = one burst; the UART pacing inside it does not apply to BLE
        await asyncio.sleep(max(0.0, emissions[0].delay_s - (loop.time() - start)))
        data = b"".join(e.data for e in emissions)
        for i in range(0, len(data), chunk):
            part = data[i : i + chunk]
            await device.notify_subscribers(notify_char, part)
            ep.notifications += 1
            ep.notification_sizes[len(part)] += 1
            if notify_interval_s:
                await asyncio.sleep(notify_interval_s)

    def on_write(_connection: Any, value: bytes) -> None:
        for request in proto.feed(bytes(value)):
            emissions = proto.respond(request)
            task = loop.create_task(send_reply(emissions))
            ep._tasks.add(task)
            task.add_done_callback(ep._tasks.discard)

    write_char = Characteristic(
        write_uuid,
        Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
        Characteristic.WRITEABLE,
        CharacteristicValue(write=on_write),
    )
    device.add_service(Service(service_uuid, [notify_char, write_char]))
    await device.power_on()
    await device.start_advertising(auto_restart=True)

    async def stop_device() -> None:
        with contextlib.suppress(Exception):
            await device.stop_advertising()
        # drop the connections first, as a module that goes away does: the client hears the disconnection
        for connection in list(device.connections.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await connection.disconnect()
        with contextlib.suppress(Exception):
            await device.power_off()

    ep._closers.append(stop_device)
    return ep


__all__ = ["BleEndpoint", "BusResponder", "StreamResponder", "VirtualRadio", "serve_ble", "virtual_radio"]
