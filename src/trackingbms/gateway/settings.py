"""Settings changed on site (over Bluetooth today): kept in ``<state_dir>/local-settings.json``, applied over
gateway.toml at every start, so a change survives restarts without rewriting the operator's TOML file
(comments and all). Delete the file to go back to gateway.toml. The server's remote configuration
(poll intervals) still applies on top when it sends a newer version.

The file holds uplink URLs by uplink name and poll intervals by battery id; never a Wi-Fi password (the
``wifi_command`` hands it to the operating system, which keeps it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("trackingbms.gateway.settings")

FILE_NAME = "local-settings.json"


class LocalSettings:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self.data: dict[str, Any] = {"uplinks": {}, "poll_interval_s": {}}
        if self.path.exists():
            try:
                loaded = orjson.loads(self.path.read_bytes())
                if not isinstance(loaded, dict):
                    raise ValueError("not a JSON object")
                for key in self.data:
                    if isinstance(loaded.get(key), dict):
                        self.data[key] = loaded[key]
            except (OSError, ValueError) as exc:
                log.warning("%s ignored: %s", self.path, exc)

    @property
    def uplinks(self) -> dict[str, str]:
        return self.data["uplinks"]

    @property
    def poll_interval_s(self) -> dict[str, float]:
        return self.data["poll_interval_s"]

    def save(self) -> None:
        """Atomically: a power cut leaves the old file or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
