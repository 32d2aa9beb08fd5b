"""Every family on every wire it runs over passes the same contract (tests/bms/contract.py)."""

from __future__ import annotations

from typing import Any

from .contract import FamilyContract


class TestA5Tcp(FamilyContract):
    family, protocol, wire = "a5", "a5", "tcp"


class TestA5Serial(FamilyContract):
    family, protocol, wire = "a5", "a5", "serial"


class TestA5Uart0x80(FamilyContract):
    """Host 0x80: every cell frame comes back, zero-filled (reference Q5)."""

    family, protocol, wire = "a5", "a5", "tcp"

    def client_options(self) -> dict[str, Any]:
        return {"address": 0x80}


class TestD2Tcp(FamilyContract):
    family, protocol, wire = "d2", "d2", "tcp"


class TestD2Serial(FamilyContract):
    family, protocol, wire = "d2", "d2", "serial"


class TestD2Status62(FamilyContract):
    """Older D2 firmware: 62 status registers; no balance bitmap (balancing only when none balance)."""

    family, protocol, wire = "d2", "d2", "tcp"

    def client_options(self) -> dict[str, Any]:
        return {"status_registers": 62}

    @staticmethod
    def expected(pack: Any) -> dict[str, Any]:
        out = FamilyContract.expected(pack)
        if out["balancing"]:
            del out["balancing"]
        return out


class TestD2OldFirmwareFound(TestD2Status62):
    """Older firmware is silent on an 80-register read: the client falls back to 62 by itself."""

    def quirks(self, **overrides: Any) -> Any:
        return super().quirks(d2_status_registers=62, **overrides)

    def client_options(self) -> dict[str, Any]:
        return {}


class TestP81Tcp(FamilyContract):
    family, protocol, wire = "p81", "p81", "tcp"
    can_set_soc = False


class TestP81SerialBoard5(FamilyContract):
    """A 0x81 board with board number 5 (asked at 0x85, answers from 0x55)."""

    family, protocol, wire = "p81", "p81", "serial"
    can_set_soc = False

    def quirks(self, **overrides: Any) -> Any:
        return super().quirks(board=5, **overrides)

    def client_options(self) -> dict[str, Any]:
        return {"board": 5}


# A new wire is one class, e.g. (the wires engineer's CAN case):
#
# class TestA5Can(FamilyContract):
#     family, protocol, wire = "a5-can", "a5", "can"
#
#     @asynccontextmanager
#     async def serve(self, packs):
#         async with serve_can_virtual(packs, channel="tbms-test") as url:   # "can://virtual/tbms-test"
#             yield url
