"""The alarm feed: which stored samples the alarm service evaluates, whichever process stored them.

Every process that stores samples (API servers, MQTT / JetStream ingest workers) writes them as hot
segments (store/segments.py); the one process holding the ``alarm-feed`` lease reads every new segment
back by id and evaluates it. So any number of processes can ingest into one database and every sample
still meets the rules, and a process that takes over (the holder stopped or died) resumes from the
cursor the previous one saved with its state: what was stored meanwhile, while still in the hot window,
is evaluated then.

Reading by id is an outbox pattern, with its one trap: on PostgreSQL an id is handed out at INSERT and
becomes visible at COMMIT, so a transaction that commits after a later id's can make the feed see id 8
before id 7. The feed remembers such skipped ids (``gaps``) and asks for them again until they turn up or
``gap_wait_s`` passes (a rolled-back insert leaves a hole for good); the cursor it saves is below the
oldest open gap. SQLite writes one transaction at a time and its ids (AUTOINCREMENT, migration 0013) are
never reused, so gaps there are only rolled-back inserts.

Sans-I/O in the sense that matters for testing: :class:`FeedCursor` holds the bookkeeping and is fed the
ids it read and the time; the service does the queries.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable

LEASE_NAME = "alarm-feed"
#: a jump over more ids than this at once is not a set of gaps to wait for (e.g. a restored database)
MAX_GAPS = 10_000


def holder_name() -> str:
    """This process, as the lease names its holder (host, pid and a nonce: a pid is reused)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class FeedCursor:
    """Which segment ids were evaluated: every id <= :attr:`cursor`, and above it every id up to
    :attr:`top` except the open :attr:`gaps` (id → when it was first missed, in the caller's seconds)."""

    def __init__(self, cursor: int, gap_wait_s: float = 30.0) -> None:
        self.top = cursor
        self.gaps: dict[int, float] = {}
        self.gap_wait_s = gap_wait_s

    @property
    def cursor(self) -> int:
        """Every id at or below it was evaluated (or given up): what a successor resumes after."""
        return min(self.gaps) - 1 if self.gaps else self.top

    def saw(self, ids: Iterable[int], now_s: float) -> None:
        """Ids read (new ones above :attr:`top`, in order, or late ones filling gaps)."""
        for i in ids:
            if i > self.top:
                if i - self.top - 1 <= MAX_GAPS:
                    for g in range(self.top + 1, i):
                        self.gaps[g] = now_s
                self.top = i
            else:
                self.gaps.pop(i, None)

    def waiting(self, now_s: float) -> list[int]:
        """The gaps worth asking for again; those older than ``gap_wait_s`` are given up."""
        for g in [g for g, t in self.gaps.items() if now_s - t > self.gap_wait_s]:
            del self.gaps[g]
        return sorted(self.gaps)
