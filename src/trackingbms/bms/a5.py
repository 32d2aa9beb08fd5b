"""The A5 family client: the legacy Daly "Smart BMS" protocol over a byte link (UART, RS485, TCP, BLE).

    bms = DalyBMS(await open_link("/dev/ttyUSB0"), address=0x40)
    reading = await bms.snapshot()          # trackingbms.model.Reading, partial with .errors
    cells = await bms.cells()               # per-command methods return typed records

The exchange (timing, retries, frames merged across retries) and the reading's plan are sans-I/O in
:mod:`trackingbms.daly.exchange` and :mod:`trackingbms.daly.snapshot`; this class only drives them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from trackingbms.bms.base import BmsClient, BmsError, BmsNoReply, BmsWriteError, MosFet, check_readback
from trackingbms.daly.a5 import HOST_RS485, HOST_UART, A5Parser, frame_time_s
from trackingbms.daly.exchange import A5Exchange
from trackingbms.daly.poll import (
    WRITE_CHARGE_MOS,
    WRITE_DISCHARGE_MOS,
    WRITE_RESET,
    WRITE_SOC,
    CommandPoll,
    mos_payload,
    soc_payload,
)
from trackingbms.daly.records import (
    Balancing,
    CellRange,
    CellVoltages,
    Faults,
    MosStatus,
    PackStatus,
    Record,
    StatusInfo,
    Temperatures,
    TempRange,
    WriteAck,
)
from trackingbms.daly.snapshot import A5Counts, A5Snapshot
from trackingbms.links import link_wire
from trackingbms.model import Source

if TYPE_CHECKING:
    from trackingbms.model import Reading

INFO_IDS = (0x50, 0x51, 0x52, 0x53, 0x57, 0x62, 0x63, 0x61, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F)


class DalyBMS(BmsClient):
    """Async client for one A5-family Daly BMS on a byte link.

    ``address``: host address (0x40 PC/RS485, 0x80 UART/app; default 0x80 over BLE, else 0x40);
    ``board``: the BMS board number on a shared RS485 bus (replies carry it; with ``address=0x40`` the
    request goes to 0x40 + board − 1).
    ``turnaround_s`` is how long the BMS may take to start answering (real units: 50–80 ms).
    """

    family = "a5"
    #: a TCP bridge may sit on the UART or on RS485: without knowing, "a5-uart" as before
    SOURCES: dict[str, Source] = {"serial": "a5-uart", "tcp": "a5-uart", "ble": "a5-ble", "can": "a5-can"}

    def __init__(
        self,
        link: Any,
        *,
        address: int | None = None,
        board: int = 1,
        invert_current: bool = False,
        source: Source | None = None,
        baud: int = 9600,
        retries: int = 2,
        turnaround_s: float = 0.2,
        filler: int = 0x00,
        owns_link: bool = True,
    ) -> None:
        super().__init__(
            link,
            board=board,
            source=source,
            invert_current=invert_current,
            baud=baud,
            retries=retries,
            turnaround_s=turnaround_s,
            owns_link=owns_link,
        )
        if address is None:
            # the Bluetooth app's host address over BLE (units send every cell frame to it), else RS485's
            address = HOST_UART if link_wire(link) == "ble" else HOST_RS485
        if address in (HOST_RS485, HOST_UART) and board > 1:
            address += board - 1  # reference §1: board n answers host 0x40 + n − 1
        self.address = address
        self.filler = filler
        self.counts = A5Counts()
        self._parser = A5Parser(board=board)

    @property
    def cell_count(self) -> int | None:
        return self.counts.cell_count

    @property
    def sensor_count(self) -> int | None:
        return self.counts.sensor_count

    @property
    def frame_s(self) -> float:
        return frame_time_s(self.baud)

    # ------------------------------------------------------------------ exchanges

    def new_exchange(self, data_id: int, payload: bytes = b"") -> A5Exchange:
        poll = CommandPoll(
            data_id,
            address=self.address,
            board=self.board,
            payload=payload,
            filler=self.filler if not payload else 0x00,
            cell_count=self.counts.cell_count,
            sensor_count=self.counts.sensor_count,
            invert_current=self.invert_current,
        )
        return A5Exchange(poll, parser=self._parser, timing=self.timing, stats=self.stats)

    def plan(self, groups: Collection[str] | None) -> A5Snapshot:
        return A5Snapshot(groups, new_exchange=self.new_exchange, counts=self.counts)

    async def query(self, data_id: int, payload: bytes = b"") -> Record:
        """Send one command and return its decoded reply (any data id the codec knows)."""
        if data_id in (0x95, 0x96, 0x97) and self.counts.cell_count is None:
            try:
                await self.status()
            except BmsError as exc:
                # without the counts from 0x94 the reply cannot be sized: say so under this command
                raise type(exc)(
                    f"needs the cell/sensor count from 0x94 first: {exc}", data_id=data_id
                ) from exc
        rec: Record = await self.exchange(self.new_exchange(data_id, payload))
        self.counts.learn(rec)
        return rec

    # ------------------------------------------------------------------ reads

    async def pack(self) -> PackStatus:
        return await self.query(0x90)  # type: ignore[return-value]

    async def cell_range(self) -> CellRange:
        return await self.query(0x91)  # type: ignore[return-value]

    async def temp_range(self) -> TempRange:
        return await self.query(0x92)  # type: ignore[return-value]

    async def mos(self) -> MosStatus:
        return await self.query(0x93)  # type: ignore[return-value]

    async def status(self) -> StatusInfo:
        return await self.query(0x94)  # type: ignore[return-value]

    async def cells(self) -> CellVoltages:
        return await self.query(0x95)  # type: ignore[return-value]

    async def temps(self) -> Temperatures:
        return await self.query(0x96)  # type: ignore[return-value]

    async def balancing(self) -> Balancing:
        return await self.query(0x97)  # type: ignore[return-value]

    async def faults(self) -> Faults:
        return await self.query(0x98)  # type: ignore[return-value]

    async def info(self) -> dict[str, object]:
        """Identity and settings: rated capacity, board layout, battery info, serial, firmware and
        hardware versions, RTC and the alarm thresholds (0x50–0x63). What a unit does not answer is
        left out (many firmwares lack some of these undocumented reads); errors are under "errors"."""
        out: dict[str, object] = {}
        errors: dict[str, str] = {}
        for data_id in INFO_IDS:
            try:
                out.update((await self.query(data_id)).fields())
            except BmsError as exc:
                errors[f"0x{data_id:02X}"] = str(exc)
        for key in ("frames", "missing_frames"):
            out.pop(key, None)
        if errors:
            out["errors"] = errors
        return out

    # ------------------------------------------------------------------ writes

    async def _write(self, data_id: int, payload: bytes) -> WriteAck:
        rec = await self.exchange(self.new_exchange(data_id, payload))
        assert isinstance(rec, WriteAck)
        return rec

    async def _write_mos(self, data_id: int, on: bool) -> None:
        ack = await self._write(data_id, mos_payload(on))
        if ack.value != (1 if on else 0):
            name = "charge" if data_id == WRITE_CHARGE_MOS else "discharge"
            msg = f"BMS answered the {name} MOSFET write with {ack.value}, not {int(on)}: not switched"
            self._fail(msg)
            raise BmsWriteError(msg, data_id=data_id)

    async def _set_mos(self, data_id: int, on: bool) -> MosStatus:
        await self._write_mos(data_id, on)
        return await self.mos()

    async def set_charge_mos(self, on: bool) -> MosStatus:
        """Switch the charge MOSFET (0xDA), check the echo, and return the MOSFET state read back."""
        return await self._set_mos(WRITE_CHARGE_MOS, on)

    async def set_discharge_mos(self, on: bool) -> MosStatus:
        """Switch the discharge MOSFET (0xD9), check the echo, and return the state read back."""
        return await self._set_mos(WRITE_DISCHARGE_MOS, on)

    async def set_mosfet(self, which: MosFet, on: bool) -> Reading:
        await self._write_mos(WRITE_CHARGE_MOS if which == "charge" else WRITE_DISCHARGE_MOS, on)
        reading = await self.snapshot(["mos"])
        check_readback(reading, f"{which}_mos", on, f"{which} MOSFET {'on' if on else 'off'}")
        return reading

    async def set_soc(self, soc_pct: float, when: datetime | None = None) -> Reading:  # type: ignore[override]
        """Set the BMS's SOC (0x21, with its RTC set to ``when``, default now) and read it back."""
        when = when or datetime.now()
        await self._write(WRITE_SOC, soc_payload(soc_pct, when))
        reading = await self.snapshot(["pack"])
        check_readback(reading, "soc_pct", round(soc_pct, 1), f"SOC {soc_pct} %", tolerance=0.05)
        return reading

    async def reset(self) -> bool:
        """Restart the BMS (0x00). The reply's shape is undocumented: True if one came, False if the
        BMS went quiet (as a restarting board may)."""
        try:
            await self._write(WRITE_RESET, b"")
        except BmsNoReply:
            return False
        self.counts = A5Counts()
        return True
