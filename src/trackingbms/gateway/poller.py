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

from trackingbms.bms import COMMANDS, BmsError, DalyBMS, LinkError, open_link
from trackingbms.gateway.config import BmsConfig
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState, merge_latest
from trackingbms.model import Reading, Sample

log = logging.getLogger("trackingbms.gateway.poller")

#: command name → the key its failure has in ``Reading.errors`` ("0x95"), from the client's own table
COMMAND_IDS = {name: f"0x{cmd.data_id:02X}" for name, cmd in COMMANDS.items()}

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


class BmsPoller:
    def __init__(
        self,
        cfg: BmsConfig,
        queue: DurableQueue,
        state: GatewayState,
        on_sample: Callable[[Sample], None],
    ):
        self.cfg = cfg
        self.queue = queue
        self.state = state
        self.on_sample = on_sample
        self.status = state.batteries[cfg.battery_id]
        self._last_run: dict[str, float] = {}
        self._last_reply_mono = time.monotonic()
        # frame counters survive reconnects (each reconnect makes a new client with fresh stats)
        self._base_good = 0
        self._base_bad = 0
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

    async def run(self) -> None:
        cfg = self.cfg
        bid = cfg.battery_id
        backoff_s = 1.0
        while True:
            try:
                link = await open_link(cfg.port, baud=cfg.baud)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure to open is "disconnected", never a crash
                err = f"cannot open {cfg.port}: {exc}"
                if self.state.set_link_state(bid, "disconnected", err):
                    log.warning("%s: %s", bid, err)
                await asyncio.sleep(_jitter(backoff_s))
                backoff_s = min(backoff_s * 2, cfg.reconnect_max_s)
                continue
            log.info("%s: link open on %s", bid, cfg.port)
            backoff_s = 1.0
            self._last_reply_mono = time.monotonic()
            self._base_good, self._base_bad = self.status.frames_good, self.status.frames_bad
            bms = DalyBMS(
                link,
                address=cfg.address,
                board=cfg.board,
                invert_current=cfg.invert_current,
                source=cfg.source,
                baud=cfg.baud,
                retries=cfg.retries,
            )
            self.client = bms
            try:
                await self._poll_loop(bms, BmsError)
            except asyncio.CancelledError:
                self.client = None
                await _close(link)
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
            await _close(link)
            await asyncio.sleep(_jitter(backoff_s))
            backoff_s = min(backoff_s * 2, cfg.reconnect_max_s)

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
                failed = set((reading.errors or {}).keys())
                for name in commands:
                    if COMMAND_IDS.get(name) not in failed:
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
