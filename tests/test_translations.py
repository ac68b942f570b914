"""Every string of the kiosk and of the service exists in French and Lithuanian, and the
catalogues are current."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
# the application, the folder of its catalogues and its extraction config
APPS = {
    "kiosk": (ROOT / "kiosk_app" / "translations", "kiosk_app/babel.cfg"),
    "server": (ROOT / "server" / "translations", "server/babel.cfg"),
}
CASES = [(app, lang) for app in APPS for lang in ("fr", "lt")]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The messages in the code and templates now, extracted afresh, per application."""
    found = {}
    for app, (_folder, cfg) in APPS.items():
        pot = tmp_path_factory.mktemp("pot") / "messages.pot"
        subprocess.run([str(Path(sys.executable).parent / "pybabel"), "extract", "-F", cfg,
                        "-k", "_l", "--no-location", "-o", str(pot), "."],
                       cwd=ROOT, check=True, capture_output=True)
        found[app] = {m.id for m in read_po(pot.open("rb")) if m.id}
    return found


def _complete(string) -> bool:
    return all(string) if isinstance(string, tuple) else bool(string)


def _catalogue(app: str, lang: str):
    return read_po((APPS[app][0] / lang / "LC_MESSAGES" / "messages.po").open("rb"))


@pytest.mark.parametrize(("app", "lang"), CASES)
def test_every_message_is_translated(extracted, app, lang):
    catalogue = _catalogue(app, lang)
    translated = {m.id: m.string for m in catalogue if m.id}
    # a plural message's id and string are tuples: every form must be translated
    missing = sorted((m for m in extracted[app] if not _complete(translated.get(m))), key=str)
    assert not missing, f"{app}/{lang}: untranslated (pybabel update, then translate): {missing}"
    fuzzy = sorted((m.id for m in catalogue if m.id and m.fuzzy), key=str)
    assert not fuzzy, f"{app}/{lang}: fuzzy entries: {fuzzy}"


@pytest.mark.parametrize(("app", "lang"), CASES)
def test_placeholders_survive_translation(app, lang):
    for message in _catalogue(app, lang):
        if message.id and isinstance(message.id, str) and "%(" in message.id:
            for name in re.findall(r"%\((\w+)\)s", message.id):
                assert f"%({name})s" in message.string, (app, lang, message.id)
