"""Which BMS answer on a wire: ``trackingbms probe`` and ``--family auto``.

Probes in turn, one exchange at a time, each with a short wait and no retry: A5 at host 0x40 and 0x80
(board 1; with ``all_boards`` also boards 2–16 at 0x40 + board − 1), D2 at 0xD2, then 0x81 boards 1–16.
Each answer is a :class:`Found` with the family, board, address, cell count and firmware (when the board
tells). On a CAN link (a frame link): legacy A5-CAN boards 1–16 (0x94 to each), then the H/K/M/S
broadcast (a keep-alive, then listening for :data:`HKMS_LISTEN_S`; every board heard is listed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from trackingbms.bms.a5 import DalyBMS
from trackingbms.bms.base import BmsClient, BmsError
from trackingbms.bms.d2 import D2Client
from trackingbms.bms.p81 import P81Client
from trackingbms.daly import d2, p81
from trackingbms.daly.records import StatusInfo

PROBE_TURNAROUND_S = 0.15


@dataclass
class Found:
    family: str
    board: int
    address: str
    cells: int | None = None
    firmware: str | None = None
    #: what to pass to open_bms to reach it again
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("options")
        return {k: v for k, v in out.items() if v is not None}


async def _a5(link: Any, board: int, address: int, **kw: Any) -> tuple[Found, BmsClient] | None:
    bms = DalyBMS(link, address=address, board=board, owns_link=False, **kw)
    try:
        status = await bms.query(0x94)
    except BmsError:
        return None
    assert isinstance(status, StatusInfo)
    firmware = None
    try:
        firmware = str((await bms.query(0x62)).fields().get("software_version") or "") or None
    except BmsError:
        pass
    found = Found("a5", board, f"0x{bms.address:02X}", status.cell_count, firmware, {"address": address})
    return found, bms


async def _d2(link: Any, **kw: Any) -> tuple[Found, BmsClient] | None:
    bms = D2Client(link, owns_link=False, **kw)
    try:
        counts = await bms.read_registers(0x31, 2)
    except BmsError:
        return None
    firmware = None
    try:
        version = d2.decode_version(d2.registers_at(d2.VERSION_START, await bms.read_registers(0xA9, 32)))
        firmware = version.get("software_version")
    except BmsError:
        pass
    return Found("d2", 1, f"0x{d2.ADDRESS:02X}", counts[0], firmware), bms


async def _p81(link: Any, board: int, **kw: Any) -> tuple[Found, BmsClient] | None:
    bms = P81Client(link, board=board, owns_link=False, **kw)
    try:
        counts = await bms.read_registers(0x3C, 2)
    except BmsError:
        return None
    return Found("p81", board, f"0x{p81.request_address(board):02X}", counts[0]), bms


#: how long a probe listens for H/K/M/S broadcasts after its keep-alive
HKMS_LISTEN_S = 2.5


async def _a5_can(link: Any, board: int, **kw: Any) -> Found | None:
    from trackingbms.bms.a5_can import A5CanClient

    bms = A5CanClient(link, board=board, owns_link=False, **kw)
    try:
        status = await bms.query(0x94)
    except BmsError:
        return None
    assert isinstance(status, StatusInfo)
    firmware = None
    try:
        firmware = str((await bms.query(0x62)).fields().get("software_version") or "") or None
    except BmsError:
        pass
    return Found(
        "a5-can", board, f"0x{0x18940000 | board << 8 | bms.address:08X}", status.cell_count, firmware
    )


async def _hkms_boards(link: Any, listen_s: float = HKMS_LISTEN_S) -> list[Found]:
    """Boards heard broadcasting after one keep-alive (the cell count once their status page came)."""
    import asyncio

    from trackingbms.daly import can as dcan

    loop = asyncio.get_running_loop()
    ka = dcan.keepalive_frame()
    heard: dict[int, dcan.HkmsAssembler] = {}
    async with link.lock:
        await link.send(ka.arbitration_id, ka.data)
        deadline = loop.time() + listen_s
        while (remaining := deadline - loop.time()) > 0:
            got = await link.recv(remaining)
            if got is None:
                break
            parts = dcan.split_hkms_id(got[0])
            if parts is not None:
                heard.setdefault(parts[1], dcan.HkmsAssembler(board=parts[1])).feed(dcan.CanFrame(*got))
    return [
        Found(
            "hkms-can",
            board,
            f"0x{dcan.HKMS_INFO_0 << 16 | dcan.HKMS_BROADCAST << 8 | board:08X}",
            asm.cell_count,
        )
        for board, asm in sorted(heard.items())
    ]


async def probe_can(
    link: Any, *, first_only: bool = False, turnaround_s: float = PROBE_TURNAROUND_S, **kw: Any
) -> list[Found]:
    """Every Daly board on a CAN bus: legacy A5-CAN boards 1–16, then H/K/M/S broadcasters."""
    found: list[Found] = []
    for board in range(1, 17):
        hit = await _a5_can(link, board, retries=0, turnaround_s=turnaround_s, **kw)
        if hit is not None:
            found.append(hit)
            if first_only:
                return found
    found += await _hkms_boards(link)
    return found[:1] if first_only else found


async def probe(
    link: Any,
    *,
    first_only: bool = False,
    all_boards: bool = True,
    baud: int = 9600,
    turnaround_s: float = PROBE_TURNAROUND_S,
    invert_current: bool = False,
) -> list[Found]:
    """Every BMS that answers on ``link`` (or the first one, ``first_only``); the link stays open."""
    if hasattr(link, "recv"):  # a frame link: CAN
        return await probe_can(
            link, first_only=first_only, turnaround_s=turnaround_s, invert_current=invert_current
        )
    kw: dict[str, Any] = {"baud": baud, "retries": 0, "turnaround_s": turnaround_s}
    kw["invert_current"] = invert_current
    found: list[Found] = []
    candidates: list[Any] = [lambda: _a5(link, 1, 0x40, **kw), lambda: _a5(link, 1, 0x80, **kw)]
    if all_boards:
        candidates += [lambda b=b: _a5(link, b, 0x40, **kw) for b in range(2, 17)]
    candidates.append(lambda: _d2(link, **kw))
    candidates += [lambda b=b: _p81(link, b, **kw) for b in range(1, 17)]
    for make in candidates:
        hit = await make()
        if hit is None:
            continue
        # the same A5 board answering at 0x40 and at 0x80 is one BMS
        if any(f.family == hit[0].family == "a5" and f.board == hit[0].board for f in found):
            continue
        found.append(hit[0])
        if first_only:
            break
    return found
