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


def test_the_readme_decode_examples_run_and_print_what_their_comments_show() -> None:
    import shlex
    import subprocess
    import sys

    lines = (ROOT / "README.md").read_text().replace("\\\n", " ").splitlines()
    examples = []
    for i, line in enumerate(lines):
        if line.startswith("trackingbms decode "):
            command, _, comment = line.partition(" # ")  # candump text has a '#' of its own
            if "{" not in comment and i + 1 < len(lines):  # the comment on the next line
                comment = lines[i + 1].strip().lstrip("#")
            examples.append((shlex.split(command)[2:], comment))
    assert len(examples) >= 3
    for args, comment in examples:
        out = subprocess.run(
            [sys.executable, "-c", "from trackingbms.cli import main; main()", "decode", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, (args, out.stderr)
        shown = re.findall(r'"(\w+)": ([^,}]+)', comment)
        assert shown, comment
        for key, value in shown:
            assert f'"{key}": {value.strip()}' in out.stdout, (args, key, out.stdout[:300])
