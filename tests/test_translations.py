"""Every kiosk string exists in French and Lithuanian, and the catalogues are current."""

import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "kiosk_app" / "translations"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The messages in the code and templates now, extracted afresh."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "extract",
                    "-F", "kiosk_app/babel.cfg", "-k", "_l", "--no-location", "-o", str(pot), "."],
                   cwd=ROOT, check=True, capture_output=True)
    return {m.id for m in read_po(pot.open("rb")) if m.id}


@pytest.mark.parametrize("lang", ["fr", "lt"])
def test_every_message_is_translated(extracted, lang):
    catalogue = read_po((TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb"))
    translated = {m.id: m.string for m in catalogue if m.id}
    missing = sorted(m for m in extracted if not translated.get(m))
    assert not missing, f"{lang}: untranslated (run pybabel update and translate): {missing}"
    fuzzy = sorted(m.id for m in catalogue if m.id and m.fuzzy)
    assert not fuzzy, f"{lang}: fuzzy entries: {fuzzy}"


@pytest.mark.parametrize("lang", ["fr", "lt"])
def test_placeholders_survive_translation(lang):
    catalogue = read_po((TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po").open("rb"))
    for message in catalogue:
        if message.id and "%(" in message.id:
            assert "%(name)s" in message.string, message.id
