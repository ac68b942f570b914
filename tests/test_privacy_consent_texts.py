"""The kiosk shows, word for word, the consent texts of the version it reports to the service.

A consent row names a text version; that is only worth something if the screen showed that
text. Changing a wording on the kiosk without publishing a new version fails here.
"""

import html as htmllib
import re

import pytest

from kiosk_app import create_app
from server.privacy.consent import texts


@pytest.fixture
def kiosk(tmp_path):
    app = create_app({"SERVER_URL": "http://127.0.0.1:9", "DEVICE_KEY": "lk_x",
                      "PRINTER": f"file:{tmp_path / 'out.bin'}", "INSTANCE_PATH": str(tmp_path)})
    return app


def _consents_page(app, lang: str) -> str:
    """The consents step, reached as a customer reaches it."""
    client = app.test_client()

    def token(page: str) -> str:
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    page = client.get(f"/?lang={lang}").get_data(as_text=True)
    client.post("/begin", data={"csrf_token": token(page)})
    page = client.get("/language").get_data(as_text=True)
    client.post("/language", data={"csrf_token": token(page), "lang": lang})
    page = client.get("/details").get_data(as_text=True)
    r = client.post("/details", data={"csrf_token": token(page), "nav": "next",
                                      "first_name": "A", "last_name": "B",
                                      "email": "a@example.org"})
    assert r.location == "/consents"
    return client.get("/consents").get_data(as_text=True)


def _shown(page: str) -> dict[str, str]:
    shown = {}
    for purpose, inner in re.findall(r'<span data-consent-text="(\w+)">(.*?)</span>', page,
                                     re.S):
        words = re.sub(r"<[^>]+>", " ", inner)
        shown[purpose] = re.sub(r"\s+", " ", htmllib.unescape(words)).strip()
    return shown


@pytest.mark.parametrize("lang", ["fr", "lt", "en"])
def test_kiosk_shows_exactly_the_published_version(kiosk, lang):
    version = kiosk.config["CONSENT_VERSION"]
    published = texts()["versions"].get(version)
    assert published, f"the kiosk's CONSENT_VERSION {version} is not published"
    shown = _shown(_consents_page(kiosk, lang))
    assert set(shown) == set(published)
    for purpose, text in shown.items():
        assert text == published[purpose][lang], (purpose, lang)


def test_the_kiosk_reports_the_current_version():
    from kiosk_app import DEFAULTS

    assert DEFAULTS["CONSENT_VERSION"] == texts()["current"]
