"""A5 protocol (legacy Daly "Smart BMS"): fixed 13-byte frames with an 8-bit sum checksum.

Sans-I/O: pure functions over bytes. See reference/daly-protocol.md §1–§3.
"""

from __future__ import annotations

START = 0xA5
FRAME_LEN = 13
DATA_LEN = 8

#: host addresses: 0x40 = PC / RS485 (board n → 0x40 + n - 1), 0x80 = UART / Bluetooth app
HOST_RS485 = 0x40
HOST_UART = 0x80


def checksum(data: bytes) -> int:
    """Low byte of the sum of all bytes given (for a frame: bytes 0–11)."""
    return sum(data) & 0xFF


def encode_frame(address: int, data_id: int, payload: bytes = b"", *, filler: int = 0x00) -> bytes:
    """Build one 13-byte A5 frame; ``payload`` is padded with ``filler`` to 8 bytes."""
    if len(payload) > DATA_LEN:
        raise ValueError(f"A5 payload is at most {DATA_LEN} bytes, got {len(payload)}")
    if not (0 <= address <= 0xFF and 0 <= data_id <= 0xFF):
        raise ValueError("address and data id must be single bytes")
    body = bytes((START, address, data_id, DATA_LEN)) + payload + bytes((filler,)) * (DATA_LEN - len(payload))
    return body + bytes((checksum(body),))


def host_address(board: int = 1, *, base: int = HOST_RS485) -> int:
    """Host address for a board on a shared RS485 bus: 0x40 + board - 1 (the reply carries the board)."""
    if not 1 <= board <= 16:
        raise ValueError(f"board number must be 1–16, got {board}")
    return base + board - 1
