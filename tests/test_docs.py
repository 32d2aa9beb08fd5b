"""The docs a newcomer follows stand alone and agree with the code (issue 9, item 13)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from trackingbms.gateway import EXAMPLE_CONFIG
from trackingbms.server.security import DEVICE_TOKEN_PREFIX

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: the reference's wording (0x40 and 0x80 are both accepted by most units)
ADDRESS_WORDING = ("0x40 = RS485/UART via the PC port", "0x80 = Bluetooth/app")


def test_docs_link_only_files_a_clone_has() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "design.md" not in text and "shared/" not in text, doc.name
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), f"{doc.name} links {target}, which is not in the repo"


def test_example_gateway_config_has_one_uplink_to_edit_and_a_real_token_shape() -> None:
    cfg = tomllib.loads(EXAMPLE_CONFIG)
    assert len(cfg["uplinks"]) == 1  # the README says to edit "the" [[uplinks]] url
    assert cfg["device_token"].startswith(DEVICE_TOKEN_PREFIX)


def test_one_wording_for_the_host_address() -> None:
    from trackingbms.cli.bms_commands import ADDRESS_OPT

    readme = " ".join((ROOT / "README.md").read_text().split())
    for wording in ADDRESS_WORDING:
        assert wording in EXAMPLE_CONFIG
        assert wording in (ADDRESS_OPT.help or "")
    assert "`--address 0x40` (RS485/UART via the PC port" in readme and "`0x80` (Bluetooth/app" in readme
