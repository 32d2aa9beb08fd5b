"""The client side of the gateway's Bluetooth service (``trackingbms direct ble://…``), on bumble or bleak.

Here, beside the service, so that one package holds both ends of the format; it needs only the codec.

``ble://<address or name>?hci=<bumble transport>`` uses **bumble**'s own host stack on that controller
(``usb:0`` for a dongle, ``tcp-client:HOST:PORT`` for a virtual controller in tests); without ``hci`` it uses
**bleak** (BlueZ on Linux, CoreBluetooth on macOS, WinRT on Windows: a laptop's own Bluetooth). Both only move
fragments; :class:`DirectSession` does the rest (reassembly, request ids, decoding) the same way for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from trackingbms.gateway.ble import codec
from trackingbms.gateway.ble.codec import Request, Response

CONNECT_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 20.0
WANTED_MTU = 517


class DirectError(Exception):
    """Connecting or a command failed; the message says why in a line."""


class DirectSession:
    """One connection to a gateway: backend-neutral. The backend calls :meth:`on_live` / :meth:`on_response`
    with each notification and provides ``write(fragment)`` and ``close()``."""

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        mtu: int,
        target: str,
    ) -> None:
        self._write = write
        self._close = close
        self.mtu = mtu
        self.target = target
        self._live = codec.Reassembler()
        self._resp = codec.Reassembler()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self.readings: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue(maxsize=1000)
        self._lock = asyncio.Lock()
        self.battery_ids: list[str] = []
        self.disconnected: str | None = None
        self.live_fragments = 0
        self.live_messages = 0

    # -- backend hooks
    def on_live(self, data: bytes) -> None:
        self.live_fragments += 1
        message = self._live.feed(bytes(data))
        if message is None:
            return
        self.live_messages += 1
        with contextlib.suppress(codec.PayloadError):
            if self.readings.full():
                self.readings.get_nowait()
            self.readings.put_nowait(codec.decode_reading(message))

    def on_response(self, data: bytes) -> None:
        message = self._resp.feed(bytes(data))
        if message is None:
            return
        try:
            resp = codec.decode_response(message)
        except codec.PayloadError as exc:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(DirectError(f"{self.target}: unreadable response: {exc}"))
            return
        fut = self._pending.get(resp.request_id)
        if fut is not None and not fut.done():
            fut.set_result(resp)

    def on_disconnect(self, reason: str = "the gateway disconnected") -> None:
        self.disconnected = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(DirectError(f"{self.target}: {reason}"))
        with contextlib.suppress(asyncio.QueueFull):
            self.readings.put_nowait((-1, {}))  # wakes a live reader

    # -- commands
    async def request(
        self, command: int, args: dict[str, Any] | None = None, pairing_code: str = ""
    ) -> Response:
        """Send a request, wait for its response (any status: the caller decides what an error means)."""
        if self.disconnected:
            raise DirectError(f"{self.target}: {self.disconnected}")
        async with self._lock:  # the gateway answers one request at a time per connection
            rid = next(self._ids) & 0xFF
            req = Request(command=command, request_id=rid, pairing_code=pairing_code, args=args or {})
            fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            try:
                for part in codec.fragment(codec.encode_request(req), self.mtu):
                    await self._write(part)
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    return await fut
            except TimeoutError:
                raise DirectError(
                    f"{self.target}: no answer to {codec.COMMAND_NAMES[command]} "
                    f"within {REQUEST_TIMEOUT_S:.0f} s"
                ) from None
            finally:
                self._pending.pop(rid, None)

    async def checked(
        self, command: int, args: dict[str, Any] | None = None, pairing_code: str = ""
    ) -> Response:
        resp = await self.request(command, args, pairing_code)
        if not resp.ok:
            raise DirectError(
                f"{codec.COMMAND_NAMES[command]}: {resp.message} ({codec.STATUS_NAMES[resp.status]})"
            )
        return resp

    async def info(self) -> dict[str, Any]:
        info = (await self.checked(codec.CMD_INFO)).body
        self.battery_ids = [b["battery_id"] for b in info["batteries"]]
        return info

    def index_of(self, battery_id: str) -> int:
        if battery_id not in self.battery_ids:
            raise DirectError(
                f"no battery {battery_id!r} on this gateway (it has {', '.join(self.battery_ids)})"
            )
        return self.battery_ids.index(battery_id)

    def with_id(self, index: int, sample: dict[str, Any]) -> dict[str, Any]:
        bid = self.battery_ids[index] if 0 <= index < len(self.battery_ids) else f"#{index}"
        return {"battery_id": bid, **sample, "via": "ble"}

    async def history(
        self, battery_id: str, from_seq: int = 0, page: int = 0
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of stored samples (sent or not) with seq >= ``from_seq``, oldest first, until the newest."""
        index = self.index_of(battery_id)
        seq = from_seq
        while True:
            body = (
                await self.checked(codec.CMD_HISTORY, {"battery": index, "from_seq": seq, "max_count": page})
            ).body
            yield [self.with_id(index, s) for s in body["samples"]]
            if not body["more"] or not body["samples"]:
                return
            seq = body["next_seq"]

    async def live(self) -> AsyncIterator[dict[str, Any]]:
        """Readings as the gateway takes them (merged: each field's newest value)."""
        while True:
            index, sample = await self.readings.get()
            if index < 0:
                raise DirectError(f"{self.target}: {self.disconnected}")
            yield self.with_id(index, sample)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._close()


# -------------------------------------------------------------------------------------------- bumble


async def connect_bumble(
    target: str,
    hci: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
    *,
    device: Any = None,
    mtu: int = WANTED_MTU,
) -> DirectSession:
    """Connect through a new bumble host on the controller ``hci``, or through ``device`` (a powered-on
    bumble ``Device``, left open: tests on a virtual radio). ``mtu``: the ATT MTU to ask for (23 = stay at
    the default, every message split into fragments)."""
    try:
        from bumble.core import UUID, AdvertisingData
        from bumble.device import Device, Peer
        from bumble.hci import Address
        from bumble.transport import open_transport
    except ImportError:
        raise DirectError("Bluetooth through bumble needs it: pip install 'trackingbms[ble]'") from None
    transport: Any = None
    if device is None:
        if not hci:
            raise DirectError("bumble needs an HCI transport (hci=usb:0, hci=tcp-client:HOST:PORT)")
        try:
            async with asyncio.timeout(timeout_s):
                transport = await open_transport(hci)
        except (OSError, TimeoutError, ValueError) as exc:
            raise DirectError(f"cannot open the Bluetooth controller {hci!r}: {exc or 'timed out'}") from None
        device = Device.with_hci(
            "trackingbms-direct", Address("F0:00:00:00:00:0D"), transport.source, transport.sink
        )
    connection: Any = None

    async def shut() -> None:
        if connection is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await connection.disconnect()
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    try:
        if transport is not None:
            async with asyncio.timeout(timeout_s):
                await device.power_on()
        address: Any = target
        if not _is_address(target):
            found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            def on_adv(adv: Any) -> None:
                name = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
                if name == target and not found.done():
                    found.set_result(adv.address)

            device.on("advertisement", on_adv)
            await device.start_scanning()
            try:
                async with asyncio.timeout(timeout_s):
                    address = await found
            except TimeoutError:
                raise DirectError(
                    f"no gateway named {target!r} advertising within {timeout_s:.0f} s"
                ) from None
            finally:
                with contextlib.suppress(Exception):
                    await device.stop_scanning()
                device.remove_listener("advertisement", on_adv)
        try:
            # our own deadline as well: a virtual controller never confirms a cancelled connection
            async with asyncio.timeout(timeout_s + 1):
                connection = await device.connect(address, timeout=timeout_s)
        except Exception as exc:
            raise DirectError(
                f"cannot connect to {target} over Bluetooth: {str(exc) or type(exc).__name__} (out of range?)"
            ) from None
        peer = Peer(connection)
        async with asyncio.timeout(timeout_s):
            if mtu > codec.DEFAULT_MTU:
                with contextlib.suppress(Exception):  # refused: stay at 23 and split (docs/ble.md)
                    await peer.request_mtu(mtu)
            await peer.discover_services([UUID(codec.SERVICE_UUID)])
            await peer.discover_characteristics()
        chars = {
            str(u): peer.get_characteristics_by_uuid(UUID(u))
            for u in (codec.LIVE_UUID, codec.COMMAND_UUID, codec.RESPONSE_UUID)
        }
        if not all(chars.values()):
            raise DirectError(f"{target} has no TrackingBMS service: is it a TrackingBMS gateway?")
        command = chars[codec.COMMAND_UUID][0]

        async def write(data: bytes) -> None:
            await peer.write_value(command, data, with_response=True)

        session = DirectSession(write, shut, connection.att_mtu, target)
        connection.on("disconnection", lambda *_: session.on_disconnect())
        async with asyncio.timeout(timeout_s):
            await peer.subscribe(chars[codec.RESPONSE_UUID][0], session.on_response)
            await peer.subscribe(chars[codec.LIVE_UUID][0], session.on_live)
        return session
    except DirectError:
        await shut()
        raise
    except TimeoutError:
        await shut()
        raise DirectError(f"{target}: Bluetooth setup timed out after {timeout_s:.0f} s") from None


def _is_address(target: str) -> bool:
    return len(target) == 17 and target.count(":") == 5


# --------------------------------------------------------------------------------------------- bleak


async def _connect_bleak(target: str, timeout_s: float) -> DirectSession:
    try:
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError
    except ImportError:
        raise DirectError("Bluetooth needs bleak: pip install 'trackingbms[ble]'") from None
    try:
        device: Any = target
        if not _is_address(target):
            device = await BleakScanner.find_device_by_name(target, timeout=timeout_s)
            if device is None:
                raise DirectError(f"no gateway named {target!r} advertising within {timeout_s:.0f} s")
        client = BleakClient(device, timeout=timeout_s)
        await client.connect()
    except DirectError:
        raise
    except (FileNotFoundError, ConnectionRefusedError):
        raise DirectError(
            f"cannot reach {target}: Bluetooth is not available here (no BlueZ on the system D-Bus); a USB "
            f"dongle works without BlueZ: ble://{target}?hci=usb:0"
        ) from None
    except (BleakError, OSError, TimeoutError) as exc:
        raise DirectError(
            f"cannot connect to {target} over Bluetooth: {str(exc) or type(exc).__name__}"
        ) from None
    except Exception as exc:  # dbus errors when BlueZ is absent come in many types
        raise DirectError(f"Bluetooth unavailable ({type(exc).__name__}: {exc}); is BlueZ running?") from None

    async def write(data: bytes) -> None:
        await client.write_gatt_char(codec.COMMAND_UUID, data, response=True)

    async def shut() -> None:
        await client.disconnect()

    session = DirectSession(write, shut, int(getattr(client, "mtu_size", codec.DEFAULT_MTU)), target)
    try:
        await client.start_notify(codec.RESPONSE_UUID, lambda _c, d: session.on_response(bytes(d)))
        await client.start_notify(codec.LIVE_UUID, lambda _c, d: session.on_live(bytes(d)))
    except Exception as exc:
        await client.disconnect()
        raise DirectError(f"{target} has no TrackingBMS service ({exc})") from None
    return session


async def connect(
    target: str, *, hci: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S
) -> DirectSession:
    """Open the gateway ``target`` (address or name): through bumble on the controller ``hci`` when given,
    else through bleak; then read the gateway's info. (``trackingbms direct`` parses the ``ble://`` URL.)"""
    if hci:
        session = await connect_bumble(target, hci, timeout_s)
    else:
        session = await _connect_bleak(target, timeout_s)
    try:
        await session.info()
    except BaseException:
        await session.close()
        raise
    return session
