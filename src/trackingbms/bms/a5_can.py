"""Family ``a5-can``: the legacy Daly CAN protocol (A5 data ids on 29-bit ids) over a CAN frame link.

The A5 client's whole logic (commands, multi-frame assembly, retries that keep the frames already in,
partial readings, verified writes) is reused: only one exchange differs. A request is one CAN frame
``0x18 <id> <board> <host>``; the replies come back on ``0x18 <id> <host> <board>`` and convert 1:1 to
A5 frames (:func:`trackingbms.daly.can.to_a5`). The CAN controller drops corrupt frames, so a reply
frame is either intact or missing: a burst ends when the last frame number is in or the bus has been
quiet for a few frame times, and a retry asks again for the frames still missing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from trackingbms.bms import DalyBMS
from trackingbms.daly import can as dcan
from trackingbms.daly.a5 import HOST_RS485
from trackingbms.daly.poll import CommandPoll
from trackingbms.links import LinkError

log = logging.getLogger(__name__)


class DalyCanBMS(DalyBMS):
    """One board on a CAN bus. ``host`` is our source address (0x40), ``board`` the destination."""

    def __init__(
        self,
        link: Any,  # trackingbms.links.can.CanLink (or anything with send / recv / reset_input)
        *,
        board: int = 1,
        host: int = HOST_RS485,
        invert_current: bool = False,
        retries: int = 2,
        turnaround_s: float = 0.2,
        bitrate: int = dcan.BITRATE,
    ) -> None:
        super().__init__(
            link,
            address=host,
            board=board,
            invert_current=invert_current,
            source="a5-can",
            retries=retries,
            turnaround_s=turnaround_s,
        )
        self.address = host  # on CAN the board travels in the destination byte, not in the host address
        self.bitrate = bitrate

    @property
    def frame_s(self) -> float:
        return dcan.frame_time_s(self.bitrate)

    @property
    def gap_s(self) -> float:
        # frames of a burst follow back to back (0.5 ms each); the floor covers the host's scheduling
        return max(3 * self.frame_s, 0.03)

    def _no_reply_message(self, data_id: int, attempts: int) -> str:
        ms = round(self.first_reply_timeout_s() * 1000 * attempts)
        return (
            f"no reply from board {self.board} on {getattr(self.link, 'url', 'the CAN bus')} within {ms} ms "
            f"(asleep? wrong board number? bus at {self.bitrate // 1000} kbit/s and terminated?) "
            f"[command 0x{data_id:02X}, {attempts} attempt{'s' if attempts != 1 else ''}]"
        )

    async def _attempt(self, poll: CommandPoll) -> tuple[bool, int]:
        loop = asyncio.get_running_loop()
        link = self.link
        link.reset_input()  # type: ignore[attr-defined]
        request = poll.start_attempt()
        frame = dcan.encode_request(poll.data_id, board=self.board, host=self.address, payload=request[4:12])
        await link.send(frame.arbitration_id, frame.data)  # type: ignore[attr-defined]
        start = loop.time()
        deadline = start + self.first_reply_timeout_s()
        # a bus that never goes quiet (other traffic) still ends the attempt once the reply had its time
        frames = poll.frames_expected or 16
        hard_deadline = start + self.turnaround_s + self.gap_s + 1.5 * self.frame_s * frames
        started = False
        while True:
            if poll.complete and not poll.extra_frames_possible:
                break
            if poll.burst_over and not poll.complete:
                break
            now = loop.time()
            timeout = min(self.gap_s, hard_deadline - now) if started else deadline - now
            if timeout <= 0:
                break
            msg = await link.recv(timeout)  # type: ignore[attr-defined]
            if msg is None:
                break
            reply = dcan.to_a5(dcan.CanFrame(*msg), host=self.address)
            if reply is None:
                continue  # another id scheme on the same bus (other devices, broadcasts)
            if poll.feed(reply):
                self.stats.frames_good += 1
                started = True
        if not poll.complete:
            self.stats.timeouts += 1
            log.debug("0x%02X attempt %d: missing %s", poll.data_id, poll.attempts, poll.missing_frames)
        return started, 0


async def open_a5_can(url: str, **options: Any) -> DalyCanBMS:
    """Open ``can://iface/channel`` and return the client for one board on it."""
    from trackingbms.links.can import open_can_link

    link = await open_can_link(url)
    try:
        return DalyCanBMS(link, **options)
    except (TypeError, ValueError) as exc:
        await link.close()
        raise LinkError(str(exc)) from None


__all__ = ["DalyCanBMS", "open_a5_can"]
