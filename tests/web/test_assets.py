"""The dashboard's files: everything vendored (no CDN), the fault texts in step with the Daly fault table."""

from __future__ import annotations

import json
import re

import httpx

from trackingbms.daly.faults import FAULT_TEXT
from trackingbms.webapp import STATIC_DIR


def test_fault_texts_match_the_daly_fault_table() -> None:
    # static/faults.json is generated from FAULT_TEXT (the server may not import the Daly layer).
    # Regenerate with: python -c "import json; from trackingbms.daly.faults import FAULT_TEXT as T; \
    #   json.dump(dict(sorted(T.items())), open('src/trackingbms/webapp/static/faults.json', 'w'), \
    #   indent=1, ensure_ascii=False)"
    shipped = json.loads((STATIC_DIR / "faults.json").read_text(encoding="utf-8"))
    assert shipped == FAULT_TEXT


def test_nothing_is_loaded_from_another_origin() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css", ".webmanifest") and "vendor" not in path.parts:
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"""(src|href|url\()\s*=?\s*["']?(https?:)?//""", text), path


def test_uplot_is_vendored_with_its_licence() -> None:
    vendor = STATIC_DIR / "vendor"
    assert (vendor / "uPlot.iife.min.js").stat().st_size > 10_000
    assert (vendor / "uPlot.min.css").exists()
    assert "MIT" in (vendor / "uPlot.LICENSE").read_text()


def test_service_worker_caches_files_that_exist() -> None:
    sw = (STATIC_DIR / "sw.js").read_text()
    shell = re.findall(r'"(/[^"]*)"', sw[sw.index("SHELL") : sw.index("];")])
    assert "/" in shell and "/static/js/app.js" in shell
    for url in shell:
        if url.startswith("/static/"):
            assert (STATIC_DIR / url.removeprefix("/static/")).is_file(), url
    for module in (STATIC_DIR / "js").glob("*.js"):
        assert f"/static/js/{module.name}" in shell, f"{module.name} is missing from the offline shell"


async def test_mount_serves_shell_worker_and_manifest_and_leaves_api_alone() -> None:
    from fastapi import FastAPI

    from trackingbms.server.web import mount

    app = FastAPI()
    mount(app)

    @app.get("/api/v1/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard") as http:
        index = await http.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert index.headers["cache-control"] == "no-cache"
        sw = await http.get("/sw.js")
        assert "javascript" in sw.headers["content-type"]
        manifest = await http.get("/manifest.webmanifest")
        assert manifest.json()["name"] == "TrackingBMS"
        js = await http.get("/static/js/app.js")
        assert "javascript" in js.headers["content-type"]
        assert (await http.get("/api/v1/ping")).json() == {"ok": True}
        assert (await http.get("/api/v1/nothing")).status_code == 404
