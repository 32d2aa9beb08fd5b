"""The pairing code that guards the Bluetooth configuration commands (docs/ble.md).

Six digits, made once from ``secrets`` at the gateway's first start with ``[ble]``, kept in
``<state_dir>/ble-pairing-code`` (mode 0600), printed in the log that once and shown in the gateway-served
app (behind the LAN token when one is set). Wrong codes lock configuration out: after every 5 consecutive
wrong codes for 30 s, doubling up to an hour, so guessing a million codes takes years. Delete the file to
get a new code.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

FILE_NAME = "ble-pairing-code"
DIGITS = 6
TRIES_BEFORE_LOCKOUT = 5
LOCKOUT_S = 30.0
LOCKOUT_MAX_S = 3600.0


def load_or_create(state_dir: Path) -> tuple[str, bool]:
    """(code, created now). A file that holds no valid code is replaced."""
    path = state_dir / FILE_NAME
    try:
        code = path.read_text(encoding="ascii").strip()
        if len(code) == DIGITS and code.isdigit():
            return code, False
    except (OSError, UnicodeDecodeError):
        pass
    code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(code + "\n")
    os.replace(tmp, path)
    return code, True


class PairingGuard:
    """Checks codes in constant time and locks out after repeated wrong ones (for every client at once:
    a guesser can reconnect at will, so per-connection counts would not slow it)."""

    def __init__(self, code: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.code = code
        self.clock = clock
        self.failures = 0
        self.locked_until = 0.0

    def locked_for_s(self) -> float:
        return max(0.0, self.locked_until - self.clock())

    def check(self, given: str) -> bool:
        """True for the right code (and not locked out); a wrong one counts towards the lockout."""
        if self.locked_for_s() > 0:
            return False
        if hmac.compare_digest(given.encode(), self.code.encode()):
            self.failures = 0
            return True
        self.failures += 1
        if self.failures % TRIES_BEFORE_LOCKOUT == 0:
            rounds = self.failures // TRIES_BEFORE_LOCKOUT
            self.locked_until = self.clock() + min(LOCKOUT_MAX_S, LOCKOUT_S * 2 ** (rounds - 1))
        return False
