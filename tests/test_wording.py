"""Counts in the back office's value, segment, report, campaign and account pages are
plural messages (Lithuanian has three forms), and the words that mean two things ("To",
"Sent", "From") carry a message context."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from flask import render_template

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """The server's messages as extracted now (the same command as test_translations)."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    subprocess.run([str(Path(sys.executable).parent / "pybabel"), "extract", "-F",
                    "server/babel.cfg", "-k", "_l", "--no-location", "-o", str(pot), "."],
                   cwd=ROOT, check=True, capture_output=True)
    return read_po(pot.open("rb"))


@pytest.mark.parametrize("singular", [
    "%(place)s of %(num)d active customer",
    "Last purchase %(num)d day ago",
    "%(num)d purchase", "%(num)d month", "%(num)d ticket", "%(num)d character",
    "%(num)d customer matches this definition today.",
    "Only the latest %(num)d is shown.",
    "%(num)d day after the end of the month",
    "the last %(num)d month",
    "No purchase in the last %(num)d month: not scored (inactive).",
    "By day, at most %(num)d day at once.",
])
def test_counts_are_plural_messages(catalogue, singular):
    [message] = [m for m in catalogue if m.id and m.pluralizable and m.id[0] == singular]
    assert len(message.id) == 2


def test_words_with_two_meanings_have_contexts(catalogue):
    contexts = {(m.context, m.id) for m in catalogue if isinstance(m.id, str)}
    assert {("recipients", "To"), ("end date", "To"), ("start date", "From"),
            ("number of messages", "Sent"), ("date sent", "Sent")} <= contexts
    assert (None, "To") not in contexts and (None, "Sent") not in contexts



def test_no_count_left_in_a_singular_message_of_these_pages():
    import re

    pages = [p for folder in ("value", "segments", "reports", "campaigns", "accounts")
             for p in (ROOT / "templates" / "server" / "backoffice" / folder).glob("*.html")]
    counted = re.compile(r'(?<![np])_\("[^"]*%\((n|num|days|months|purchases|tickets|'
                         r'customers|active|length|parts)\)')
    for page in pages:
        assert not counted.search(page.read_text()), page.name

def _explanation(days: int, purchases: int, months: int, tickets: int, customers: int):
    from server.value.service import Component, Explanation

    def component(key: str, **params) -> Component:
        return Component(key, None, 50, 1, 1, Decimal(10), "", params)

    return Explanation("C-TEST-0001", True, 50, "medium", 1, customers, months, (
        component("recency", days=days), component("frequency", purchases=purchases,
                                                   months=months),
        component("support", tickets=tickets, purchases=purchases)), "EUR",
        computed_at=datetime(2026, 11, 24, 3, 15))  # as read from a snapshot


def test_one_and_many_read_right_in_english(app):
    with app.test_request_context("/backoffice/"):
        one = render_template("server/backoffice/value/_explain.html",
                              v=_explanation(1, 1, 1, 1, 1))
        many = render_template("server/backoffice/value/_explain.html",
                               v=_explanation(3, 5, 12, 2, 40))
    for expected in ("1 of 1 active customer<", "Last purchase 1 day ago",
                     "1 purchase in 1 month", "1 ticket for 1 purchase",
                     "a purchase in the last 1 month)"):
        assert expected in one, expected
    for expected in ("1 of 40 active customers", "Last purchase 3 days ago",
                     "5 purchases in 12 months", "2 tickets for 5 purchases",
                     "a purchase in the last 12 months)"):
        assert expected in many, expected
