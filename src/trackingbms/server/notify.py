"""Alarm notifications through apprise (e-mail over SMTP, webhooks, ntfy, Telegram, … by URL).

apprise rather than our own senders: one URL per target covers dozens of services, and tenants already
know its URL syntax. Each tenant has targets (URL, severities, whether recoveries are sent). Transitions
arrive one per crossing (the evaluator marks which ones notify); they are held ``group_s`` seconds and sent
as one message per target, so fifty packs tripping at once make one message listing fifty alarms, not
fifty messages. apprise is synchronous: it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, Protocol

log = logging.getLogger(__name__)


class TargetSource(Protocol):
    async def targets_for(self, tenant_id: int) -> list[dict[str, Any]]: ...


def _line(item: dict[str, Any]) -> str:
    where = f"{item['battery_name']} ({item['battery_id']}, {item['site']})"
    return f"[{item['severity']}] {where}: {item['event_message']}"


def compose(items: list[dict[str, Any]]) -> tuple[str, str]:
    """(title, body) of one message about these alarm transitions."""
    if len(items) == 1:
        i = items[0]
        verb = "cleared" if i["event"] == "cleared" else "alarm"
        return f"TrackingBMS {verb}: {i['battery_name']}: {i['event_message']}", _line(i)
    kinds = Counter("cleared" if i["event"] == "cleared" else "raised" for i in items)
    packs = len({i["battery_id"] for i in items})
    parts = [f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: kv[0] != "raised")]
    title = f"TrackingBMS: {', '.join(parts)} on {packs} pack{'s' if packs != 1 else ''}"
    order = {"critical": 0, "warning": 1, "info": 2}
    lines = [_line(i) for i in sorted(items, key=lambda i: (i["event"] == "cleared", order[i["severity"]]))]
    return title, "\n".join(lines)


#: apprise's message type per severity (a webhook's ``type``, a chat service's colour or icon)
_NOTIFY_TYPES = {"critical": "failure", "warning": "warning", "info": "info"}


def notify_type(items: list[dict[str, Any]]) -> str:
    """The message's type: its gravest raised (or reminded) alarm's, ``success`` when all are recoveries."""
    raised = {i["severity"] for i in items if i["event"] != "cleared"}
    for severity in ("critical", "warning", "info"):
        if severity in raised:
            return _NOTIFY_TYPES[severity]
    return "success"


def send(url: str, title: str, body: str, kind: str = "info") -> bool:
    import apprise

    ap = apprise.Apprise()
    if not ap.add(url):
        log.warning("notification URL not understood by apprise: %s", url.split("://", 1)[0] + "://…")
        return False
    return bool(ap.notify(title=title, body=body, notify_type=apprise.NotifyType(kind)))


class Notifier:
    def __init__(self, targets: TargetSource, *, group_s: float = 5.0) -> None:
        self.targets = targets
        self.group_s = group_s
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self._wake = asyncio.Event()
        #: messages sent and failed, for logs and tests
        self.sent = 0
        self.failed = 0

    def submit(self, tenant_id: int, items: list[dict[str, Any]]) -> None:
        if items:
            self.pending.setdefault(tenant_id, []).extend(items)
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.group_s)  # let a burst gather into one message
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("sending notifications failed")

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for tenant_id, items in pending.items():
            for target in await self.targets.targets_for(tenant_id):
                chosen = [
                    i
                    for i in items
                    if i["severity"] in target["severities"]
                    and (i["event"] != "cleared" or target["recovery"])
                ]
                if not chosen:
                    continue
                title, body = compose(chosen)
                ok = await asyncio.to_thread(send, target["url"], title, body, notify_type(chosen))
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
                    log.warning("notification to target %s failed (%d alarms)", target["id"], len(chosen))
