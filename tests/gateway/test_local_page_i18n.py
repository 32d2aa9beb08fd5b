"""The gateway's LAN page in the browser's language: French words for Accept-Language: fr, English otherwise,
served over real HTTP by the local API."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from trackingbms.gateway.config import LocalApiConfig
from trackingbms.gateway.local import PAGE_TEXT, LocalApi
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState


async def _status() -> dict[str, Any]:
    return {}


def test_lan_page_speaks_french_for_accept_language_fr_and_english_otherwise(tmp_path: Path) -> None:
    async def go() -> dict[str, str]:
        api = LocalApi(LocalApiConfig(listen="127.0.0.1:0"), GatewayState(), DurableQueue(tmp_path), _status)
        await api.start()
        try:
            base = f"http://127.0.0.1:{api.port}/"
            async with httpx.AsyncClient(timeout=10) as client:
                pages = {}
                for name, header in (("fr", "fr-FR,fr;q=0.9,en;q=0.8"), ("en", "en-GB,en"), ("de", "de-DE")):
                    pages[name] = (await client.get(base, headers={"Accept-Language": header})).text
                return pages
        finally:
            await api.stop()

    # a thread of its own: another test in the session (Playwright's sync API) may own this one's loop
    with ThreadPoolExecutor(1) as pool:
        pages = pool.submit(asyncio.run, go()).result(timeout=60)
    fr = pages["fr"]
    assert '<html lang="fr">' in fr
    assert "<h1>Passerelle TrackingBMS — batteries en direct</h1>" in fr
    assert ">connexion…<" in fr and "<title>Passerelle TrackingBMS</title>" in fr
    assert '"déconnecté de la passerelle, nouvelle tentative…"' in fr  # the script's words, French too
    for english in ("live packs", ">connecting…<", "<title>TrackingBMS gateway</title>"):
        assert english not in fr
    # no {{placeholder}} left, and every French word has its English counterpart
    assert "{{" not in fr and PAGE_TEXT["fr"].keys() == PAGE_TEXT["en"].keys()
    for page in (pages["en"], pages["de"]):  # a language the page lacks falls back to English
        assert '<html lang="en">' in page and "<h1>TrackingBMS gateway — live packs</h1>" in page
