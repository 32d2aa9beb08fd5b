"""What a transport tells the uplink policy: the contract between ``policy`` and ``http`` / ``mqtt``.

A transport only moves bytes and reports what came back, in these terms; every decision (ack, park,
dead-letter, back off, shrink the batch, fail over) is the policy's, the same for every transport.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Reply:
    """The server's ingest reply (``accepted``, ``duplicates``, ``rejected``, maybe ``config``), received
    after it committed the batch."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """Nothing is known to be stored: keep the samples, back off, count towards failover."""

    error: str


@dataclass(frozen=True)
class Wait:
    """Rate-limited: try again after ``seconds``; not a failure."""

    seconds: float


@dataclass(frozen=True)
class TooLarge:
    """The server refused the batch as a whole (too large or unparsable): shrink it; a single sample
    refused this way can never be accepted."""

    status: int
    detail: str


Outcome = Reply | Failed | Wait | TooLarge


class TransportError(Exception):
    """A heartbeat could not be delivered; the message says why in a user's words."""


class Transport(Protocol):
    name: str
    url: str

    async def send_batch(self, body: bytes, config_version: int) -> Outcome:
        """Send ``{"samples": [...]}`` (JSON, as bytes) and return what the server made of it."""
        ...

    async def heartbeat(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Deliver a heartbeat; returns the server's reply if the transport carries one. Raises
        :class:`TransportError`."""
        ...

    async def aclose(self) -> None: ...
