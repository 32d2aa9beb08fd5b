"""Browser tests: Playwright drives Debian's Chromium against a running demo (server + gateways + simulated
packs, all real, talking over HTTP and TCP). One demo per session keeps the suite short.

Screenshots go to a temp dir (printed at the end of the session), or to ``$TRACKINGBMS_SCREENSHOTS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: generous: how long the packs may take to report for the first time on a loaded CI machine
STARTUP_DEADLINE_S = 90.0


def _need_browser() -> None:
    reasons = []
    if not Path(CHROMIUM).exists():
        reasons.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reasons.append("the playwright Python package is missing (pip install -e '.[dev]')")
    if not reasons:
        return
    if IN_CI:
        pytest.fail("; ".join(reasons) + " (CI must install it: see .ci/run)")
    pytest.skip("; ".join(reasons))


class DemoClient:
    """The running demo seen through its HTTP API as the demo user."""

    def __init__(self, info: Any) -> None:
        self.info = info
        self.base = info.url.rstrip("/")
        # no keep-alive: a connection the server closes as idle while a request goes out would fail the
        # test ("Server disconnected without sending a response"), more often the longer the session runs
        self.http = httpx.Client(
            base_url=self.base, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )
        resp = self.http.post("/api/v1/auth/login", json={"email": info.email, "password": info.password})
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params or None)
        resp.raise_for_status()
        return resp.json()

    def fleet(self) -> dict[str, dict[str, Any]]:
        return {b["battery_id"]: b for b in self.get("/api/v1/fleet")["batteries"]}

    def csv(self, battery_id: str, from_: str, to: str) -> str:
        resp = self.http.get(f"/api/v1/batteries/{battery_id}/export.csv", params={"from": from_, "to": to})
        resp.raise_for_status()
        return resp.text

    def wait_for(self, what: str, check: Any, deadline_s: float = STARTUP_DEADLINE_S) -> Any:
        """Poll ``check()`` until it returns something truthy (a readiness wait, not a speed assertion)."""
        end = time.monotonic() + deadline_s
        last: Any = None
        while time.monotonic() < end:
            last = check()
            if last:
                return last
            time.sleep(0.5)
        pytest.fail(f"gave up waiting for {what} after {deadline_s:g} s (last: {last!r})")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoClient]:
    _need_browser()
    from trackingbms.cli.demo import DemoThread

    runner = DemoThread(
        port=0, speed=120.0, poll_interval_s=1.0, history_h=2.0, data_dir=tmp_path_factory.mktemp("demo")
    )
    info = runner.start(timeout_s=STARTUP_DEADLINE_S)
    try:
        client = DemoClient(info)

        def all_reporting() -> bool:
            # every pack has reported; the awake ones with a full reading (cabin-boat sleeps early on)
            fleet = client.fleet()
            return len(fleet) == len(info.batteries) and all(
                b.get("latest") and (b["battery_id"] == "cabin-boat" or b["latest"].get("cells_mv"))
                for b in fleet.values()
            )

        client.wait_for("every pack's first sample", all_reporting)
        yield client
        client.http.close()
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = os.environ.get("TRACKINGBMS_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    yield path
    print(f"\nscreenshots: {path}")


@pytest.fixture(scope="session")
def browser(demo: DemoClient) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Any, demo: DemoClient) -> Iterator[Any]:
    """``new_page(width=1280, height=900)`` → a fresh page (own storage); page errors and CSP violations
    fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(width: int = 1280, height: int = 900, **options: Any) -> Any:
        ctx = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True, **options
        )
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # the server's Content-Security-Policy forbids inline script and style: a violation is a bug
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def login(page: Any, demo: DemoClient) -> None:
    page.goto(demo.info.url)
    page.fill("#email", demo.info.email)
    page.fill("#password", demo.info.password)
    page.click("#login-submit")
    page.wait_for_selector(".pack-row")
