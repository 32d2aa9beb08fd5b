"""One polling task per BMS: reads on cadence, stores samples durably, tracks the link state.

Link states (reported in the heartbeat and the local API):

- ``ok``: the last poll got every command it asked for;
- ``degraded``: some commands failed (the sample is stored partial, with the reasons), or replies stopped
  only a short while ago;
- ``asleep``: the link is open but nothing answered for ``asleep_after_s`` (a Daly BMS sleeps after an idle
  time and cannot be woken by a command); probed with backoff up to ``reconnect_max_s``;
- ``disconnected``: the port cannot be opened / the TCP peer refused or dropped; reopened with backoff.

A poll where nothing at all answered stores no sample (there is no reading to store); the link state says
why. A poll where some commands answered stores a partial sample whose ``errors`` name the failed commands.

The poller knows no family: it opens the BMS through :func:`trackingbms.bms.open_bms` with the configured
``family`` and reads cadence *groups* (family-neutral names). BMS on the same port (several boards on one
RS485 bus) share one link through :class:`SharedLinks`; each exchange holds the link, one at a time.

A port that cannot be opened is logged at once with the port and the reason, then again every
:data:`OPEN_FAILURE_LOG_EVERY_S` while it lasts (and once when it opens again).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from trackingbms.bms import BmsError, LinkError, open_bms, open_link
from trackingbms.gateway.config import BmsConfig
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState, merge_latest
from trackingbms.model import Reading, Sample

log = logging.getLogger("trackingbms.gateway.poller")

#: while a port cannot be opened, the failure is logged again this often (the first one at once)
OPEN_FAILURE_LOG_EVERY_S = 300.0

#: errors that mean the byte stream itself is gone (port unplugged, TCP peer closed)
LINK_LOST = (OSError, EOFError, asyncio.IncompleteReadError, ConnectionError)


async def _close(link: Any) -> None:
    close = getattr(link, "close", None) or getattr(link, "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):
        result = close()
        if inspect.isawaitable(result):
            await result


def _jitter(delay_s: float) -> float:
    return delay_s * random.uniform(0.8, 1.2)


class SharedLinks:
    """One open link per port, shared by the pollers of every board on it. A broken link is closed and
    dropped: the next :meth:`acquire` opens a new one (the other users find theirs closed and come back)."""

    def __init__(self) -> None:
        self._links: dict[str, Any] = {}
        self._users: dict[str, int] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    async def acquire(self, port: str, *, baud: int) -> Any:
        async with self._opening.setdefault(port, asyncio.Lock()):
            link = self._links.get(port)
            if link is None:
                link = await open_link(port, baud=baud)
                self._links[port] = link
                self._users[port] = 0
            self._users[port] += 1
            return link

    async def release(self, port: str, link: Any, *, broken: bool = False) -> None:
        current = self._links.get(port)
        if current is not link:
            await _close(link)  # already replaced after a break
            return
        self._users[port] -= 1
        if broken or self._users[port] <= 0:
            del self._links[port]
            del self._users[port]
            await _close(link)


class BmsPoller:
    def __init__(
        self,
        cfg: BmsConfig,
        queue: DurableQueue,
        state: GatewayState,
        on_sample: Callable[[Sample], None],
        links: SharedLinks | None = None,
    ):
        self.cfg = cfg
        self.links = links or SharedLinks()
        self.queue = queue
        self.state = state
        self.on_sample = on_sample
        self.status = state.batteries[cfg.battery_id]
        self._last_run: dict[str, float] = {}
        self._last_reply_mono = time.monotonic()
        # frame counters survive reconnects (each reconnect makes a new client with fresh stats)
        self._base_good = 0
        self._base_bad = 0
        self._open_failed_since: float | None = None
        self._open_failure_logged = 0.0
        #: the BMS client while the link is open (writers such as Home Assistant's switches use it), else None
        self.client: Any = None

    def due_commands(self, now: float) -> list[str]:
        commands = ["pack"]
        # a command is due when its cadence has (nearly) elapsed; half a poll of slack keeps it on the beat
        slack = self.status.poll_interval_s / 2
        for name, every_s in self.status.cadences_s.items():
            last = self._last_run.get(name)
            if last is None or now - last >= every_s - slack:
                commands.append(name)
        return commands

    def _open_failed(self, exc: BaseException) -> None:
        """Log the first failure to open the port at once, then every OPEN_FAILURE_LOG_EVERY_S."""
        cfg = self.cfg
        err = f"cannot open {cfg.port}: {exc}"
        self.state.set_link_state(cfg.battery_id, "disconnected", err)
        now = time.monotonic()
        if self._open_failed_since is None:
            self._open_failed_since = self._open_failure_logged = now
            log.warning("%s: %s (retrying)", cfg.battery_id, err)
        elif now - self._open_failure_logged >= OPEN_FAILURE_LOG_EVERY_S:
            self._open_failure_logged = now
            log.warning(
                "%s: %s (still failing for %.0f s)", cfg.battery_id, err, now - self._open_failed_since
            )

    async def run(self) -> None:
        cfg = self.cfg
        bid = cfg.battery_id
        backoff_s = 1.0
        while True:
            link = None
            try:
                link = await self.links.acquire(cfg.port, baud=cfg.baud)
                bms = await open_bms(cfg.port, cfg.family, link=link, baud=cfg.baud, **self._client_options())
            except asyncio.CancelledError:
                if link is not None:
                    await self.links.release(cfg.port, link)
                raise
            except Exception as exc:  # any failure to open is "disconnected", never a crash
                if link is not None:
                    await self.links.release(cfg.port, link)
                self._open_failed(exc)
                await asyncio.sleep(_jitter(backoff_s))
                backoff_s = min(backoff_s * 2, cfg.reconnect_max_s)
                continue
            if self._open_failed_since is not None:
                log.warning(
                    "%s: %s open again after %.0f s",
                    bid,
                    cfg.port,
                    time.monotonic() - self._open_failed_since,
                )
                self._open_failed_since = None
            log.info("%s: link open on %s (%s, board %d)", bid, cfg.port, cfg.family, cfg.board)
            backoff_s = 1.0
            self._last_reply_mono = time.monotonic()
            self._base_good, self._base_bad = self.status.frames_good, self.status.frames_bad
            self.client = bms
            try:
                await self._poll_loop(bms, BmsError)
            except asyncio.CancelledError:
                self.client = None
                await self.links.release(cfg.port, link)
                raise
            except (*LINK_LOST, LinkError) as exc:  # the byte stream is gone
                err = f"link lost: {exc.__class__.__name__}: {exc}"
                if self.state.set_link_state(bid, "disconnected", err):
                    log.warning("%s: %s", bid, err)
            except Exception as exc:
                err = f"unexpected {exc.__class__.__name__}: {exc}"
                log.exception("%s: %s; reopening the link", bid, err)
                self.state.set_link_state(bid, "disconnected", err)
            self.client = None
            await self.links.release(cfg.port, link, broken=True)
            await asyncio.sleep(_jitter(backoff_s))
            backoff_s = min(backoff_s * 2, cfg.reconnect_max_s)

    def _client_options(self) -> dict[str, Any]:
        cfg = self.cfg
        options: dict[str, Any] = {
            "board": cfg.board,
            "invert_current": cfg.invert_current,
            "source": cfg.source,
            "retries": cfg.retries,
        }
        if cfg.family == "a5" and cfg.address is not None:
            options["address"] = cfg.address
        return options

    async def _poll_loop(self, bms: Any, bms_error: type[Exception]) -> None:
        bid = self.cfg.battery_id
        st = self.status
        probe_s = 0.0  # extra wait while asleep (backoff)
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            commands = self.due_commands(now)
            reading: Reading | None
            started = time.monotonic()
            try:
                reading = await bms.snapshot(commands)
                error = None
            except bms_error as exc:  # a LinkError passes through: reconnect, state "disconnected"
                reading, error = None, f"{exc.__class__.__name__}: {exc}"
            st.poll_times.observe(time.monotonic() - started)
            self._update_stats(bms)
            got = reading.measurements() if reading is not None else {}
            if got:
                assert reading is not None
                self._last_reply_mono = time.monotonic()
                failed = set(getattr(bms, "failed_groups", ()))
                for name in commands:
                    if name not in failed:
                        self._last_run[name] = now
                sample = await self.queue.aput(bid, reading)  # committed (fsynced) off the event loop
                st.latest = merge_latest(st.latest, sample.to_wire())
                st.last_reply_ts = st.latest["ts"]
                self.on_sample(sample)
                if failed:
                    why = "; ".join(f"{k}: {v}" for k, v in sorted((reading.errors or {}).items()))
                    self.state.set_link_state(bid, "degraded", why)
                else:
                    self.state.set_link_state(bid, "ok")
                probe_s = 0.0
            else:
                if error is None and reading is not None and reading.errors:
                    error = "; ".join(f"{k}: {v}" for k, v in sorted(reading.errors.items()))
                error = error or "no reply"
                silent_s = time.monotonic() - self._last_reply_mono
                if silent_s >= self.cfg.asleep_after_s:
                    if self.state.set_link_state(bid, "asleep", f"no reply for {silent_s:.0f} s ({error})"):
                        log.warning("%s: BMS asleep (no reply for %.0f s)", bid, silent_s)
                    probe_s = min(max(probe_s * 2, st.poll_interval_s), self.cfg.reconnect_max_s)
                else:
                    self.state.set_link_state(bid, "degraded", error)
            next_at += st.poll_interval_s + probe_s
            delay = next_at - time.monotonic()
            if delay < 0:  # overran (slow link): keep the beat, do not burst to catch up
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    def _update_stats(self, bms: Any) -> None:
        stats = getattr(bms, "stats", None)
        if stats is None:
            return
        self.status.frames_good = self._base_good + int(getattr(stats, "frames_good", 0) or 0)
        self.status.frames_bad = self._base_bad + int(getattr(stats, "frames_bad", 0) or 0)
        last = getattr(stats, "last_error", None)
        if last:
            self.status.last_error = str(last)
