"""The dashboard's API tokens page in Chromium: create a token (shown once), use it, revoke it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import DemoClient, login

pytestmark = pytest.mark.browser

WAIT_MS = 60_000


def test_create_use_and_revoke_an_api_token(new_page: Any, demo: DemoClient) -> None:
    page = new_page()
    login(page, demo)
    page.click('a[data-nav="tokens"]')
    page.wait_for_selector(".token-form", timeout=WAIT_MS)
    page.fill("#token-name", "browser-test")
    page.select_option("#token-scope", "read")
    page.fill("#token-days", "7")
    page.click(".token-form button[type=submit]")
    token = page.wait_for_selector("#new-token", timeout=WAIT_MS).inner_text().strip()
    assert token.startswith("tbp_")
    row = page.wait_for_selector('tr[data-status="active"]:has-text("browser-test")', timeout=WAIT_MS)
    token_id = row.get_attribute("data-token-id")

    api = httpx.Client(base_url=demo.base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert api.get("/api/v1/fleet").status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f'tr[data-token-id="{token_id}"] button.revoke')
    page.wait_for_selector(f'tr[data-token-id="{token_id}"][data-status="revoked"]', timeout=WAIT_MS)
    assert api.get("/api/v1/fleet").status_code == 401
    # shown once: reloading the page never shows the token again
    page.reload()
    page.wait_for_selector(f'tr[data-token-id="{token_id}"]', timeout=WAIT_MS)
    assert token not in page.content()
