"""Login abuse: failed attempts per account and per client address, answered with growing delays.

After ``free`` failures in a row for a key (an account's email, a client address), each further failure
locks that key for ``base_s × 2^(n − free)`` seconds, up to ``max_s``; while it is locked, logins for it are
refused with 429 and ``Retry-After`` *without* checking the password (a locked account costs no hashing).
A success clears the account's count; an address's count is only forgotten ``forget_s`` after its last
failure (one valid account must not let an address guess the passwords of others).

:class:`LoginThrottle` is the interface the login route uses; :class:`MemoryLoginThrottle` keeps the state
in this process. Several server processes need a shared implementation (same three methods) over a shared
store. Hand-written: the policy is a few lines, and the libraries around (slowapi, limits) count requests
per window rather than consecutive failures.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ThrottlePolicy:
    free: int  # failures allowed before the first delay
    base_s: float = 1.0
    max_s: float = 900.0
    forget_s: float = 3600.0  # a key's failures are forgotten this long after the last one


class LoginThrottle(Protocol):
    async def retry_after(self, keys: Sequence[str]) -> float:
        """Seconds before a login for any of ``keys`` may be tried; 0.0 if it may be tried now."""
        ...

    async def failed(self, keys: Sequence[str]) -> None:
        """Count a failed login against each key."""
        ...

    async def succeeded(self, keys: Sequence[str]) -> None:
        """A login succeeded: clear the keys that a success clears (the account, not the address)."""
        ...


def account_key(email: str) -> str:
    return "account:" + email.strip().lower()


def address_key(host: str) -> str:
    return "address:" + host


class MemoryLoginThrottle:
    """:class:`LoginThrottle` in this process's memory; at most ``max_keys`` keys (the least recently
    failed are dropped first, so a flood of made-up emails cannot grow it without bound)."""

    def __init__(
        self,
        policies: dict[str, ThrottlePolicy],
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: policy by key prefix ("account", "address")
        self.policies = policies
        self.max_keys = max_keys
        self.clock = clock
        # key → (failures in a row, locked until, last failure)
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def _policy(self, key: str) -> ThrottlePolicy:
        return self.policies[key.split(":", 1)[0]]

    def _get(self, key: str, now: float) -> tuple[int, float, float] | None:
        st = self._state.get(key)
        if st is not None and now - st[2] > self._policy(key).forget_s:
            del self._state[key]
            return None
        return st

    async def retry_after(self, keys: Sequence[str]) -> float:
        now = self.clock()
        wait = 0.0
        for key in keys:
            st = self._get(key, now)
            if st is not None:
                wait = max(wait, st[1] - now)
        return wait

    async def failed(self, keys: Sequence[str]) -> None:
        now = self.clock()
        for key in keys:
            pol = self._policy(key)
            st = self._get(key, now)
            n = (st[0] if st else 0) + 1
            locked = now + min(pol.max_s, pol.base_s * 2 ** (n - pol.free - 1)) if n > pol.free else 0.0
            self._state[key] = (n, locked, now)
            self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)

    async def succeeded(self, keys: Sequence[str]) -> None:
        for key in keys:
            if key.startswith("account:"):
                self._state.pop(key, None)
