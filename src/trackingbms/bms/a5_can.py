"""Family ``a5-can``: the legacy Daly CAN protocol (A5 data ids on 29-bit ids) over a CAN frame link.

The A5 client's whole logic (commands, multi-frame assembly, retries that keep the frames already in,
partial readings, writes verified by reading back) is reused; only the exchange differs
(:class:`trackingbms.daly.can.A5CanExchange`): a request is one CAN frame ``0x18 <id> <board> <host>``,
replies come back on ``0x18 <id> <host> <board>``. Several boards share one bus (and one link): the
board number travels in the destination byte, the host address stays 0x40.
"""

from __future__ import annotations

from typing import Any

from trackingbms.bms.a5 import DalyBMS
from trackingbms.daly import can as dcan
from trackingbms.daly.a5 import HOST_RS485
from trackingbms.daly.poll import CommandPoll
from trackingbms.model import Source


class A5CanClient(DalyBMS):
    """One legacy Daly board on a CAN bus. ``host`` is our source address (0x40), ``board`` the
    destination; ``bitrate`` only sizes the waits (the link sets the bus's bit rate)."""

    family = "a5-can"
    SOURCES: dict[str, Source] = {"can": "a5-can"}

    def __init__(
        self, link: Any, *, host: int = HOST_RS485, bitrate: int = dcan.BITRATE, **options: Any
    ) -> None:
        options.pop("address", None)  # the A5 host address of the byte links; CAN uses ``host``
        super().__init__(link, address=host, **options)
        self.address = host  # the board is in the destination byte, not added to the host address
        self.bitrate = bitrate

    @property
    def frame_s(self) -> float:
        return dcan.frame_time_s(self.bitrate)

    def new_exchange(self, data_id: int, payload: bytes = b"") -> dcan.A5CanExchange:  # type: ignore[override]
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
        return dcan.A5CanExchange(
            poll,
            host=self.address,
            bitrate=self.bitrate,
            timing=self.timing,
            stats=self.stats,
            bus_name=getattr(self.link, "url", "the CAN bus"),
        )


#: the name used before the family registry
DalyCanBMS = A5CanClient

__all__ = ["A5CanClient", "DalyCanBMS"]
