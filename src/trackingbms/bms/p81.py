"""The 0x81 family client: boards 1–16 on one RS485 bus (asked at 0x80 + board, answering from
0x50 + board). Register map: :mod:`trackingbms.daly.p81`; everything else is the D2 client's
(:class:`trackingbms.bms.d2.RegisterClient`). Several boards on one bus: one client per board on a shared
link (``open_bms(port, "p81", link=shared, board=n)``); the link's lock keeps one exchange on the wire.
"""

from __future__ import annotations

from typing import Any

from trackingbms.bms.d2 import ALL_GROUPS, RegisterClient
from trackingbms.daly import p81
from trackingbms.daly.snapshot import BlockRead
from trackingbms.model import Source


class P81Client(RegisterClient):
    family = "p81"
    LABEL = "0x81"
    # no BLE source value of its own: over BLE these boards are reported with the D2 BLE source
    SOURCES: dict[str, Source] = {"serial": "p81-rs485", "tcp": "p81-rs485", "ble": "d2-ble"}
    NOT_CARRIED = frozenset({"faults", "fault_code", "charger_connected", "load_connected"})
    BLOCKS = (BlockRead(p81.STATUS_START, p81.STATUS_REGISTERS, ALL_GROUPS),)
    REG_CHARGE_MOS = p81.REG_CHARGE_MOS
    REG_DISCHARGE_MOS = p81.REG_DISCHARGE_MOS
    REG_SOC = None
    INFO_BLOCKS = ((p81.SETTINGS_BASE, 41),)
    BUS_ADDRESSES = p81.REPLY_ADDRESSES

    @property
    def request_address(self) -> int:
        return p81.request_address(self.board)

    @property
    def reply_address(self) -> int:
        return p81.reply_address(self.board)

    def decode(self, start: int, values: list[int]) -> dict[str, Any]:
        return p81.decode_block(start, values, invert_current=self.invert_current)
