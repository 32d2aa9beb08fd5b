"""Bluetooth LE link to a Daly BMS: the UART-over-GATT services, through bleak or bumble.

Daly's Bluetooth (the old dongle and the built-in modules) is a serial line over GATT: the host writes
requests to one characteristic and the BMS answers in notifications on another (reference Q12, Q13):

- service ``fff0``: notify ``fff1``, write ``fff2`` (dongles, older boards; handles differ between
  dongle generations, so characteristics are always found by UUID, never by handle);
- service ``ff00``: notify ``ff01``, write ``ff02`` (newer DL-/JHB- firmware).

A notification holds part of a frame, one frame or several, so the link is a byte stream like the
serial one (:class:`~trackingbms.links.ByteLink`: ``write``, ``read``, ``reset_input``, ``close``):
the protocol's stream parser reassembles frames (A5: resync + checksum; D2: byte count + CRC).

URLs: ``ble://C0:DA:17:00:00:01`` or ``ble://DL-40D63C…`` (a name: scanned for). Without ``hci=`` the
link uses **bleak** (BlueZ on Linux, CoreBluetooth, WinRT). With ``?hci=<bumble transport>`` it uses
**bumble**'s own host stack over that HCI transport instead: ``hci=usb:0`` drives a USB dongle directly
(no BlueZ), ``hci=tcp-client:127.0.0.1:PORT`` reaches a virtual controller (``trackingbms simulate
--wire ble`` serves one), which is how the tests run the same link code without a radio.
:func:`open_bumble_link` also takes an already powered-on bumble ``Device`` (in-process tests, the
gateway's own GATT service for phones reuses these UUIDs and the chunking helper).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from trackingbms.links import LinkError

#: (service, notify, write) 16-bit UUIDs of the Daly UART-over-GATT layouts, newest last
DALY_GATT = (("fff0", "fff1", "fff2"), ("ff00", "ff01", "ff02"))
#: ATT payload of a notification at the default MTU of 23
DEFAULT_CHUNK = 20
CONNECT_TIMEOUT_S = 15.0


def full_uuid(short: str) -> str:
    """``fff0`` → ``0000fff0-0000-1000-8000-00805f9b34fb`` (the Bluetooth base UUID)."""
    return f"0000{short.lower()}-0000-1000-8000-00805f9b34fb"


def chunks(data: bytes, size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
    """Split a reply into notification payloads of at most ``size`` bytes."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def parse_ble_url(url: str) -> tuple[str, dict[str, str]]:
    """``ble://target?k=v`` → (address or name, options)."""
    parts = urlsplit(url)
    if parts.scheme != "ble":
        raise LinkError(f"bad Bluetooth port {url!r}: expected ble://<address or name>")
    target = (parts.netloc + parts.path).strip("/")
    if not target:
        raise LinkError(f"bad Bluetooth port {url!r}: no address or name after ble://")
    return target, dict(parse_qsl(parts.query))


class BleLink:
    """Notifications in, writes out, as a byte stream. Backend-neutral: a backend calls
    :meth:`_on_notify` and provides ``_write(bytes)`` and ``_close()``."""

    wire = "ble"

    def __init__(self, url: str, *, service: str) -> None:
        self.url = url
        self.service = service
        self.lock = asyncio.Lock()
        self._buf = bytearray()
        self._event = asyncio.Event()
        self._closed: str | None = None
        self.notifications = 0

    # -- backend hooks
    def _on_notify(self, data: bytes) -> None:
        self.notifications += 1
        self._buf += data
        self._event.set()

    def _on_disconnect(self, reason: str = "disconnected") -> None:
        self._closed = reason
        self._event.set()

    async def _write(self, data: bytes) -> None:  # pragma: no cover - replaced by the backend
        raise NotImplementedError

    async def _close(self) -> None:  # pragma: no cover - replaced by the backend
        raise NotImplementedError

    # -- ByteLink
    async def write(self, data: bytes) -> None:
        if self._closed is not None:
            raise LinkError(f"{self.url}: Bluetooth link closed ({self._closed})")
        try:
            await self._write(data)
        except LinkError:
            raise
        except Exception as exc:
            raise LinkError(f"{self.url}: write failed: {exc or type(exc).__name__}") from None

    async def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if not self._buf:
            if self._closed is not None:
                raise LinkError(f"{self.url}: Bluetooth link closed ({self._closed})")
            self._event.clear()
            try:
                async with asyncio.timeout(max(0.0, timeout_s)):
                    await self._event.wait()
            except TimeoutError:
                return b""
            if not self._buf and self._closed is not None:
                raise LinkError(f"{self.url}: Bluetooth link closed ({self._closed})")
        data = bytes(self._buf[:max_bytes])
        del self._buf[:max_bytes]
        return data

    def reset_input(self) -> None:
        self._buf.clear()

    async def close(self) -> None:
        if self._closed == "closed":
            return
        self._closed = "closed"
        with contextlib.suppress(Exception):
            await self._close()

    def __repr__(self) -> str:
        return f"<BleLink {self.url} service {self.service}>"


# -------------------------------------------------------------------------------------------- bumble


class _BumbleLink(BleLink):
    def __init__(self, url: str, *, service: str, peer: Any, write_char: Any, owned: list[Any]) -> None:
        super().__init__(url, service=service)
        self._peer = peer
        self._write_char = write_char
        self._owned = owned  # what we opened and must close: [device, transport] or []

    async def _write(self, data: bytes) -> None:
        await self._peer.write_value(self._write_char, data, with_response=False)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                await self._peer.connection.disconnect()
        for thing in self._owned:
            with contextlib.suppress(Exception):
                res = thing.close() if hasattr(thing, "close") else None
                if asyncio.iscoroutine(res):
                    await res


async def open_bumble_link(
    target: str,
    *,
    device: Any | None = None,
    hci: str | None = None,
    url: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> BleLink:
    """Connect with bumble: through ``device`` (powered on, yours to close) or a new host on the HCI
    transport ``hci`` (``usb:0``, ``tcp-client:HOST:PORT``, ``serial:/dev/ttyACM0``…)."""
    try:
        from bumble.device import Device, Peer
        from bumble.hci import Address
        from bumble.transport import open_transport
    except ImportError:
        raise LinkError(
            "Bluetooth through bumble needs it installed: pip install 'trackingbms[ble]'"
        ) from None
    url = url or f"ble://{target}" + (f"?hci={hci}" if hci else "")
    owned: list[Any] = []
    try:
        if device is None:
            if not hci:
                raise LinkError(f"{url}: bumble needs an HCI transport (hci=usb:0, hci=tcp-client:HOST:PORT)")
            try:
                async with asyncio.timeout(timeout_s):
                    transport = await open_transport(hci)
            except (OSError, TimeoutError, ValueError) as exc:
                raise LinkError(
                    f"cannot open the Bluetooth controller {hci!r}: {exc or 'timed out'}"
                ) from None
            owned.append(transport)
            device = Device.with_hci(
                "trackingbms", Address("F0:00:00:00:00:0B"), transport.source, transport.sink
            )
            async with asyncio.timeout(timeout_s):
                await device.power_on()
        try:
            # our own deadline as well: after its timeout bumble cancels the connection attempt and
            # waits for the controller to confirm, which a virtual controller never does
            async with asyncio.timeout(timeout_s + 1.0):
                connection = await device.connect(target, timeout=timeout_s)
        except TimeoutError:
            raise LinkError(
                f"cannot connect to {target} over Bluetooth: not found within {timeout_s:.0f} s "
                "(out of range? another phone or app connected? the BMS's Bluetooth asleep?)"
            ) from None
        except Exception as exc:
            raise LinkError(
                f"cannot connect to {target} over Bluetooth: {exc or type(exc).__name__} "
                "(out of range? another phone or app connected? the BMS's Bluetooth asleep?)"
            ) from None
        peer = Peer(connection)
        async with asyncio.timeout(timeout_s):
            await peer.discover_services()
            await peer.discover_characteristics()
        for service, notify_uuid, write_uuid in DALY_GATT:
            notify = peer.get_characteristics_by_uuid(_bumble_uuid(notify_uuid))
            write = peer.get_characteristics_by_uuid(_bumble_uuid(write_uuid))
            if notify and write:
                link = _BumbleLink(url, service=service, peer=peer, write_char=write[0], owned=owned)
                connection.on("disconnection", lambda *_, lk=link: lk._on_disconnect("the BMS disconnected"))
                async with asyncio.timeout(timeout_s):
                    await peer.subscribe(notify[0], link._on_notify)
                return link
        with contextlib.suppress(Exception):
            await connection.disconnect()
        raise LinkError(f"{target} has no Daly UART service (fff0 or ff00): is it a Daly BMS?")
    except TimeoutError:
        for thing in owned:
            with contextlib.suppress(Exception):
                await thing.close()
        raise LinkError(f"{url}: Bluetooth setup timed out after {timeout_s:.0f} s") from None
    except LinkError:
        for thing in owned:
            with contextlib.suppress(Exception):
                await thing.close()
        raise


def _bumble_uuid(short: str) -> Any:
    from bumble.core import UUID

    return UUID(short.upper())


# --------------------------------------------------------------------------------------------- bleak


class _BleakLink(BleLink):
    def __init__(self, url: str, *, service: str, client: Any, write_uuid: str) -> None:
        super().__init__(url, service=service)
        self._client = client
        self._write_uuid = write_uuid

    async def _write(self, data: bytes) -> None:
        await self._client.write_gatt_char(self._write_uuid, data, response=False)

    async def _close(self) -> None:
        await self._client.disconnect()


async def bluez_available() -> str | None:
    """None when bleak can reach a Bluetooth adapter here, else the reason it cannot."""
    try:
        from bleak import BleakScanner
    except ImportError:
        return "bleak is not installed (pip install 'trackingbms[ble]')"
    try:
        async with asyncio.timeout(5.0):
            await BleakScanner.discover(timeout=0.1)
    except Exception as exc:
        return f"no usable Bluetooth adapter: {str(exc) or type(exc).__name__}"
    return None


async def open_bleak_link(
    target: str, *, url: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S
) -> BleLink:
    """Connect with bleak (the operating system's Bluetooth stack) by address or name."""
    try:
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError
    except ImportError:
        raise LinkError("Bluetooth needs bleak: pip install 'trackingbms[ble]'") from None
    url = url or f"ble://{target}"
    try:
        is_address = len(target) == 17 and target.count(":") == 5
        device: Any = target
        if not is_address:
            device = await BleakScanner.find_device_by_name(target, timeout=timeout_s)
            if device is None:
                raise LinkError(f"no Bluetooth device named {target!r} found within {timeout_s:.0f} s")
        client = BleakClient(device, timeout=timeout_s)
        await client.connect()
    except LinkError:
        raise
    except (FileNotFoundError, ConnectionRefusedError):
        # bleak talks to BlueZ over the system D-Bus: its socket is missing or nobody listens
        raise LinkError(
            f"cannot reach {target}: Bluetooth is not available here (no BlueZ on the system D-Bus: is "
            "bluetoothd running, is there an adapter?); a USB dongle also works without BlueZ: "
            f"ble://{target}?hci=usb:0"
        ) from None
    except (BleakError, OSError, TimeoutError) as exc:
        raise LinkError(
            f"cannot connect to {target} over Bluetooth: {str(exc) or type(exc).__name__}"
        ) from None
    except Exception as exc:  # dbus errors when BlueZ is absent come in many types
        raise LinkError(f"Bluetooth unavailable ({type(exc).__name__}: {exc}); is BlueZ running?") from None
    uuids = {c.uuid.lower() for s in client.services for c in s.characteristics}
    for service, notify_uuid, write_uuid in DALY_GATT:
        if full_uuid(notify_uuid) in uuids and full_uuid(write_uuid) in uuids:
            link = _BleakLink(url, service=service, client=client, write_uuid=full_uuid(write_uuid))
            await client.start_notify(
                full_uuid(notify_uuid), lambda _c, data, lk=link: lk._on_notify(bytes(data))
            )
            return link
    await client.disconnect()
    raise LinkError(f"{target} has no Daly UART service (fff0 or ff00): is it a Daly BMS?")


async def open_ble(url: str, *, baud: int | None = None, **_: Any) -> BleLink:
    """Open ``ble://address-or-name[?hci=transport]`` (bumble with ``hci``, bleak without); ``baud`` (the
    serial links' rate) does not apply."""
    target, options = parse_ble_url(url)
    timeout_s = float(options.get("timeout", CONNECT_TIMEOUT_S))
    if "hci" in options:
        return await open_bumble_link(target, hci=options["hci"], url=url, timeout_s=timeout_s)
    return await open_bleak_link(target, url=url, timeout_s=timeout_s)


#: the old name
open_ble_link = open_ble

__all__ = [
    "DALY_GATT",
    "DEFAULT_CHUNK",
    "BleLink",
    "bluez_available",
    "chunks",
    "full_uuid",
    "open_ble",
    "open_ble_link",
    "open_bleak_link",
    "open_bumble_link",
    "parse_ble_url",
]
