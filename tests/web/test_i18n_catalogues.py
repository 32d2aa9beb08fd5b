"""The dashboard's message catalogues: the same keys and placeholders in English and French, every key the
code asks for present, and the fault texts in both languages covering the Daly fault table."""

from __future__ import annotations

import json
import re

from trackingbms.daly.faults import FAULT_TEXT
from trackingbms.webapp import STATIC_DIR

LANGS = ("en", "fr")


def catalogue(lang: str) -> dict[str, str]:
    return json.loads((STATIC_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_both_catalogues_have_the_same_keys_and_placeholders() -> None:
    en, fr = catalogue("en"), catalogue("fr")
    assert en.keys() == fr.keys()
    for key, text in en.items():
        assert isinstance(text, str) and text and isinstance(fr[key], str) and fr[key], key
        assert placeholders(text) == placeholders(fr[key]), key


def test_every_literal_key_the_code_asks_for_is_in_the_catalogue() -> None:
    en = catalogue("en")
    asked: set[str] = set()
    for module in (STATIC_DIR / "js").glob("*.js"):
        code = module.read_text(encoding="utf-8")
        # t("key") / tr("key"), label/title keys in tables, data-i18n in the shell; tn("key") takes
        # .one and .other
        asked |= set(re.findall(r"""\btr?\(\s*"([a-z][\w.-]+)"\s*[,)]""", code))
        plurals = re.findall(r"""\btn\(\s*"([a-z][\w.-]+)"\s*,""", code)
        asked |= {f"{k}.{form}" for k in plurals for form in ("one", "other")}
        asked |= set(re.findall(r"""(?:label|title): "((?:chart|conn|link|fleet)\.[\w.-]+)\"""", code))
    asked |= set(re.findall(r'data-i18n(?:-title)?="([^"]+)"', (STATIC_DIR / "index.html").read_text()))
    assert len(asked) > 100
    assert sorted(asked - en.keys()) == []


def test_fault_texts_exist_in_both_languages_for_every_daly_fault() -> None:
    # faults.json is FAULT_TEXT itself (tests/web/test_assets.py); faults.fr.json translates each entry
    fr = json.loads((STATIC_DIR / "faults.fr.json").read_text(encoding="utf-8"))
    assert fr.keys() == FAULT_TEXT.keys()
    assert all(text and text != FAULT_TEXT[name] for name, text in fr.items())
    # the level suffix reads the same way as the catalogue's words for it
    for name, text in fr.items():
        if name.endswith("_l1"):
            assert text.endswith(f"({catalogue('fr')['fault.level1']})"), name
        if name.endswith("_l2"):
            assert text.endswith(f"({catalogue('fr')['fault.level2']})"), name
