"""The D2 family client (fixed address 0xD2; RS485, TCP bridges, BLE) and the base of the Modbus-shaped
families (0x81 is :mod:`trackingbms.bms.p81`). Codec and register map: :mod:`trackingbms.daly.d2`,
framing and the exchange: :mod:`trackingbms.daly.modbus`, the plan: :class:`RegisterSnapshot`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

from trackingbms.bms.base import BmsClient, BmsError, BmsNoReply, MosFet, check_readback
from trackingbms.daly import d2
from trackingbms.daly.modbus import ModbusExchange, ModbusRequest, ReplyParser
from trackingbms.daly.snapshot import GROUPS, BlockRead, RegisterSnapshot
from trackingbms.model import Source

if TYPE_CHECKING:
    from trackingbms.model import Reading

ALL_GROUPS = frozenset(GROUPS)


class RegisterClient(BmsClient):
    """A Modbus-shaped Daly board: reads register blocks, writes single registers (echoed)."""

    LABEL: ClassVar[str] = "D2"
    BLOCKS: ClassVar[tuple[BlockRead, ...]]
    REG_CHARGE_MOS: ClassVar[int]
    REG_DISCHARGE_MOS: ClassVar[int]
    REG_SOC: ClassVar[int | None] = None
    #: register blocks read by info(): (start, count)
    INFO_BLOCKS: ClassVar[tuple[tuple[int, int], ...]] = ()
    #: reply addresses of other boards on the same bus (their replies are skipped whole)
    BUS_ADDRESSES: ClassVar[frozenset[int] | None] = None

    def __init__(self, link: Any, **options: Any) -> None:
        super().__init__(link, **options)
        self._parser = ReplyParser(self.reply_address, addresses=self.BUS_ADDRESSES)

    @property
    def request_address(self) -> int:
        raise NotImplementedError

    @property
    def reply_address(self) -> int:
        raise NotImplementedError

    def decode(self, start: int, values: list[int]) -> dict[str, Any]:
        raise NotImplementedError

    def decode_info(self, start: int, values: list[int]) -> dict[str, Any]:
        return self.decode(start, values)

    def new_exchange(self, request: ModbusRequest) -> ModbusExchange:
        return ModbusExchange(
            request,
            request_address=self.request_address,
            parser=self._parser,
            timing=self.timing,
            stats=self.stats,
            family=self.LABEL,
        )

    def plan(self, groups: Collection[str] | None) -> RegisterSnapshot:
        return RegisterSnapshot(
            groups,
            blocks=self.BLOCKS,
            new_exchange=lambda start, count: self.new_exchange(ModbusRequest("read", start, count)),
            decode=self.decode,
        )

    async def read_registers(self, start: int, count: int) -> list[int]:
        values: list[int] = await self.exchange(self.new_exchange(ModbusRequest("read", start, count)))
        return values

    async def write_register(self, register: int, value: int) -> None:
        """Function 6; the echo is checked (a board stays silent on a register it does not know)."""
        await self.exchange(self.new_exchange(ModbusRequest("write", register, 1, value)))

    async def set_mosfet(self, which: MosFet, on: bool) -> Reading:
        reg = self.REG_CHARGE_MOS if which == "charge" else self.REG_DISCHARGE_MOS
        await self.write_register(reg, 1 if on else 0)
        reading = await self.snapshot(["mos"])
        check_readback(reading, f"{which}_mos", on, f"{which} MOSFET {'on' if on else 'off'}")
        return reading

    async def set_soc(self, soc_pct: float) -> Reading:
        if not 0 <= soc_pct <= 100:
            raise ValueError(f"SOC must be 0–100 %, got {soc_pct}")
        if self.REG_SOC is None:
            raise BmsError(f"the {self.family} family has no documented SOC register: not written")
        await self.write_register(self.REG_SOC, round(soc_pct * 10))
        reading = await self.snapshot(["pack"])
        check_readback(reading, "soc_pct", round(soc_pct, 1), f"SOC {soc_pct} %", tolerance=0.05)
        return reading

    async def info(self) -> dict[str, object]:
        out: dict[str, object] = {}
        errors: dict[str, str] = {}
        for start, count in self.INFO_BLOCKS:
            try:
                values = await self.read_registers(start, count)
            except BmsError as exc:
                errors[f"0x{start:04X}+{count}"] = str(exc)
                continue
            fields = self.decode_info(start, values)
            fields.pop("start_register", None)
            fields.pop("registers", None)
            out.update(fields)
        if errors:
            out["errors"] = errors
        return out


class D2Client(RegisterClient):
    """One D2 board. Reads the 80-register status block; older firmware answers 62 registers only and
    stays silent on a longer read: the first time that happens the client tries 62 and keeps to it if the
    board answers (or pass ``status_registers=62``). With 62 the balance bitmap is absent."""

    family = "d2"
    LABEL = "D2"
    SOURCES: dict[str, Source] = {"serial": "d2-rs485", "tcp": "d2-rs485", "ble": "d2-ble"}
    NOT_CARRIED = frozenset({"fault_code", "charger_connected", "load_connected"})
    REG_CHARGE_MOS = d2.REG_CHARGE_MOS
    REG_DISCHARGE_MOS = d2.REG_DISCHARGE_MOS
    REG_SOC = d2.REG_SOC
    INFO_BLOCKS = ((d2.SETTINGS_START, d2.SETTINGS_REGISTERS), (d2.VERSION_START, d2.VERSION_REGISTERS))

    def __init__(
        self, link: Any, *, status_registers: int = d2.STATUS_REGISTERS_LONG, **options: Any
    ) -> None:
        if status_registers not in (d2.STATUS_REGISTERS, d2.STATUS_REGISTERS_LONG):
            raise ValueError("status_registers must be 62 or 80")
        self._set_status_registers(status_registers)
        self._fallback_tried = status_registers == d2.STATUS_REGISTERS
        super().__init__(link, **options)

    def _set_status_registers(self, n: int) -> None:
        self.status_registers = n
        self.BLOCKS = (BlockRead(d2.STATUS_START, n, ALL_GROUPS),)  # type: ignore[misc]

    async def snapshot(self, groups: Collection[str] | None = None) -> Reading:
        try:
            return await super().snapshot(groups)
        except BmsNoReply:
            if self._fallback_tried:
                raise
            self._fallback_tried = True  # once per client: a sleeping board must not cost double forever
            self._set_status_registers(d2.STATUS_REGISTERS)
            try:
                return await super().snapshot(groups)
            except BmsNoReply:
                self._set_status_registers(d2.STATUS_REGISTERS_LONG)
                raise

    @property
    def request_address(self) -> int:
        return d2.ADDRESS

    @property
    def reply_address(self) -> int:
        return d2.ADDRESS

    def decode(self, start: int, values: list[int]) -> dict[str, Any]:
        return d2.decode_block(start, values, invert_current=self.invert_current)
