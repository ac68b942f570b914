"""The loyalty batch jobs through the CLI, on SQLite and PostgreSQL: points expiry (oldest
first, safe twice), the CSV import of opening balances, and loading a programme file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from server.customers.models import Customer
from server.db import Base
from server.loyalty.models import ImportedCustomer, PointsEntry, ProgrammeVersion, Purchase
from server.privacy.models import Consent
from server.stores.models import Store
from server.vault.service import read_personal_data
from tests.support.fixtures_server import Api
from tests.test_loyalty_api import SMALL, WELCOME, ledger_invariant_problems

line = Api.line


def _main(app) -> Session:
    return Session(app.extensions["loyalty.db"].main)


def _cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture(autouse=True)
def ledger_invariant(app):
    yield
    assert ledger_invariant_problems(app) == []


def _enrolled(api: Api) -> str:
    response = api.enrol()
    assert response.status_code == 201, response.get_json()
    return response.get_json()["customer_id"]


def _buy(api: Api, customer_id: str, amount: str, paid_at: datetime) -> dict:
    response = api.purchase([line("BOOK", 1, amount, category="books")],
                            customer_id=customer_id, paid_at=paid_at.isoformat())
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _balance(app, customer_id: str) -> int:
    with _main(app) as s:
        return s.scalar(select(Customer.points).where(Customer.id == customer_id))


def _expired(app, customer_id: str) -> list[int]:
    with _main(app) as s:
        return list(s.scalars(select(PointsEntry.delta).where(
            PointsEntry.customer_id == customer_id, PointsEntry.kind == "expire")
            .order_by(PointsEntry.id)))


# --------------------------------------------------------------------------- expiry


def test_points_expire_oldest_first_and_twice_is_harmless(app, api):
    now = datetime.now(UTC)
    # the default programme expires points 24 months after they were earned: points of a
    # purchase paid 760 days ago expired about a month ago, those of today in 2 years; so do
    # the welcome points each customer got today, so they are the newest lot here
    long_ago = now - timedelta(days=760)
    old, spender, fresh = _enrolled(api), _enrolled(api), _enrolled(api)

    first = _buy(api, old, "300.00", long_ago)
    _buy(api, old, "100.00", now)
    assert api.redeem("COFFEE", customer_id=old).status_code == 201   # 150 of the oldest
    assert _balance(app, old) == WELCOME + 250
    # a customer who spent most of their old points before they expired
    _buy(api, spender, "200.00", long_ago)
    assert api.redeem("COFFEE", customer_id=spender).status_code == 201
    assert _balance(app, spender) == WELCOME + 50
    _buy(api, fresh, "80.00", now)
    with _main(app) as s:
        expires = s.scalar(select(PointsEntry.expires_at)
                           .where(PointsEntry.purchase_id == first["purchase_id"]))
    assert now - timedelta(days=40) < expires < now - timedelta(days=20)

    result = _cli(app, "points", "expire")
    assert result.exit_code == 0, result.output
    assert "200 points expired for 2 customers" in result.output
    # the old purchase's 300 less the 150 spent from them; the 100 of today and the welcome
    # points stay
    assert (_balance(app, old), _expired(app, old)) == (WELCOME + 100, [-150])
    # only what was left of the spent points expires, never the spent ones again
    assert (_balance(app, spender), _expired(app, spender)) == (WELCOME, [-50])
    assert (_balance(app, fresh), _expired(app, fresh)) == (WELCOME + 80, [])

    again = _cli(app, "points", "expire")
    assert again.exit_code == 0, again.output
    assert "0 points expired for 0 customers" in again.output
    assert (_balance(app, old), _balance(app, spender), _balance(app, fresh)) == \
        (WELCOME + 100, WELCOME, WELCOME + 80)

    # the points of today, earned and welcome, once their time has come, expire too; the
    # earlier expiry and the redemption are not counted twice
    with _main(app) as s:
        s.execute(update(PointsEntry).where(PointsEntry.customer_id == old,
                                            PointsEntry.kind.in_(("earn", "welcome")),
                                            PointsEntry.expires_at > now)
                  .values(expires_at=now - timedelta(minutes=1)))
        s.commit()
    result = _cli(app, "points", "expire")
    assert f"{WELCOME + 100} points expired for 1 customers" in result.output
    assert (_balance(app, old), _expired(app, old)) == (0, [-150, -(WELCOME + 100)])
    assert "0 points expired" in _cli(app, "points", "expire").output
    assert _balance(app, fresh) == WELCOME + 80


# --------------------------------------------------------------------------- import

CSV = """\
source_id,first_name,last_name,email,phone,language,points,marketing_email
OLD-1,Jonas,Petraitis,jonas.petraitis@example.lt,,lt,120,yes
OLD-2,Marie,Lefebvre,,+33611223344,fr,0,no
OLD-3,,Nameless,nameless@example.org,,fr,10,
OLD-4,Negative,Points,negative@example.org,,fr,-5,
OLD-5,Bad,Email,not-an-email,,fr,10,
OLD-6,Word,Points,word@example.org,,fr,ten,
OLD-7,Hans,Unbekannt,hans@example.de,,de,10,
OLD-8,Ona,Kazlauskiene,ona@example.lt,,EN,75,
"""
BAD = {4: "first_name", 5: "negative", 6: "email", 7: "whole number", 8: "language"}


def _all_main_text(app) -> str:
    with app.extensions["loyalty.db"].main.connect() as conn:
        return "\n".join(repr(tuple(row)) for table in Base.metadata.sorted_tables
                         for row in conn.execute(table.select()))


def test_import_balances_from_csv(app, tmp_path):
    path = tmp_path / "old-system.csv"
    path.write_text(CSV, encoding="utf-8")
    result = _cli(app, "import", "balances", str(path), "--store", "TEST")
    assert result.exit_code == 0, result.output
    assert "3 imported, 0 already imported, 5 rejected" in result.stdout
    reported = [ln for ln in result.stderr.splitlines() if ln.startswith("line ")]
    assert [int(ln.split(":")[0].split()[1]) for ln in reported] == sorted(BAD)
    for text in reported:
        number = int(text.split(":")[0].split()[1])
        assert BAD[number] in text, text
        assert "@" not in text  # a report never repeats personal data

    with _main(app) as s:
        imported = dict(s.execute(select(ImportedCustomer.source_id,
                                         ImportedCustomer.customer_id)).all())
        assert set(imported) == {"OLD-1", "OLD-2", "OLD-8"}
        rows = {c.id: c for c in s.scalars(select(Customer))}
        test_store = s.scalar(select(Store.id).where(Store.code == "TEST"))
        assert {(rows[imported[k]].points, rows[imported[k]].language) for k in imported} == \
            {(120, "lt"), (0, "fr"), (75, "en")}
        assert {rows[cid].home_store_id for cid in imported.values()} == {test_store}
        entries = s.execute(select(PointsEntry.customer_id, PointsEntry.kind,
                                   PointsEntry.delta, PointsEntry.event_id)).all()
        assert sorted(entries, key=lambda e: e.delta) == sorted([
            (imported["OLD-8"], "import", 75, "import:OLD-8"),
            (imported["OLD-1"], "import", 120, "import:OLD-1")], key=lambda e: e[2])
        # an opening balance is not a purchase
        assert s.scalar(select(func.count()).select_from(Purchase)) == 0
        consents = dict(s.execute(select(Consent.purpose, Consent.granted).where(
            Consent.customer_id == imported["OLD-1"])).all())
        assert consents["terms"] is True and consents["marketing_email"] is True
        assert consents["marketing_sms"] is False

    # personal data is in the vault only, encrypted
    main_text = _all_main_text(app)
    for secret in ("Jonas", "Petraitis", "jonas.petraitis", "+33611223344", "Kazlauskiene"):
        assert secret not in main_text
    with app.app_context(), Session(app.extensions["loyalty.db"].vault) as vault:
        assert read_personal_data(vault, imported["OLD-1"]) == {
            "first_name": "Jonas", "last_name": "Petraitis",
            "email": "jonas.petraitis@example.lt", "phone": None}
        assert read_personal_data(vault, imported["OLD-2"])["phone"] == "+33611223344"
        assert read_personal_data(vault, imported["OLD-8"])["last_name"] == "Kazlauskiene"

    # run again: nothing new, the same rows rejected
    again = _cli(app, "import", "balances", str(path), "--store", "TEST")
    assert again.exit_code == 0, again.output
    assert "0 imported, 3 already imported, 5 rejected" in again.stdout
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(ImportedCustomer)) == 3
        assert s.scalar(select(func.count()).select_from(PointsEntry)) == 2
        assert s.scalar(select(func.count()).select_from(Customer)) == 3

    # an unknown store, or a file without the required columns: refused, nothing done
    assert _cli(app, "import", "balances", str(path), "--store", "NOPE").exit_code != 0
    headless = tmp_path / "headless.csv"
    headless.write_text("id,name\n1,x\n", encoding="utf-8")
    refused = _cli(app, "import", "balances", str(headless), "--store", "TEST")
    assert refused.exit_code != 0
    assert "source_id" in refused.output


# --------------------------------------------------------------------------- programme file


def test_programme_load_from_a_file(app, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("threshold = 100\n", "threshold = 0\n").replace(
        'categories = ["promo"]', 'categories = ["promo"]\nhours = [18, 10]'), encoding="utf-8")
    result = _cli(app, "programme", "load", str(bad))
    assert result.exit_code != 0
    assert "tiers[1].threshold" in result.output
    assert "promotions[0].hours" in result.output
    with _main(app) as s:
        assert s.scalar(select(func.count()).select_from(ProgrammeVersion)) == 0

    good = tmp_path / "good.toml"
    good.write_text(SMALL, encoding="utf-8")
    result = _cli(app, "programme", "load", str(good))
    assert result.exit_code == 0, result.output
    assert "programme version 1 in force: 3 tiers, 1 rewards" in result.output
    shown = _cli(app, "programme", "show")
    assert shown.exit_code == 0
    assert '"version": 1' in shown.output and '"R50"' in shown.output


def test_a_return_of_new_points_does_not_keep_old_points_alive(app, api):
    now = datetime.now(UTC)
    customer_id = _enrolled(api)
    _buy(api, customer_id, "100.00", now - timedelta(days=760))   # expired a month ago
    today = _buy(api, customer_id, "100.00", now)
    returned = api.refund(purchase_id=today["purchase_id"])
    assert returned.status_code == 201, returned.get_json()
    assert returned.get_json()["points_reversed"] == 100
    # the old purchase's points, past their date, and the welcome points of today
    assert _balance(app, customer_id) == WELCOME + 100

    result = _cli(app, "points", "expire")
    assert result.exit_code == 0, result.output
    # the old 100 expire, the welcome points (not due for 2 years) stay
    assert (_balance(app, customer_id), _expired(app, customer_id)) == (WELCOME, [-100])
