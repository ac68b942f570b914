"""``server.hotsql.Prepared``: the hot path's statements, run on the driver's cursor, give what
``Session.execute`` gives, in the same transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import databases
from server.devices.models import Device
from server.hotsql import Prepared
from server.stores.models import Store
from server.taps.models import Visit
from tests.support.fixtures_server import Api

visits, stores, devices = Visit.__table__, Store.__table__, Device.__table__


@pytest.fixture
def card(api: Api) -> dict:
    customer_id, card = api.customer_with_card()
    return {"customer_id": customer_id, "card_id": card["card_id"]}


def _device(s: Session) -> tuple[int, int]:
    return tuple(s.execute(select(devices.c.id, devices.c.store_id).limit(1)).one())


def _visit(**values) -> dict:
    return {"reader": "r", "method": "qr", "weak": False, "tapped_at": None, **values}


INSERT = Prepared(insert(visits).values(
    {c: bindparam(c) for c in ("event_id", "customer_id", "card_id", "store_id", "device_id",
                               "reader", "method", "weak", "tapped_at", "recorded_at")})
    .returning(visits.c.id))
BY_CARD = Prepared(
    select(visits.c.id, visits.c.weak, visits.c.recorded_at,
           func.coalesce(visits.c.tapped_at, visits.c.recorded_at).label("at"))
    .where(visits.c.card_id == bindparam("card_id"), visits.c.method.in_(("qr", "url")))
    .order_by(visits.c.id))


def test_rows_match_session_execute_types_included(app, card):
    """Same rows, same Python types (aware UTC datetimes, booleans), literal lists kept."""
    recorded = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)  # a DST night in Europe
    tapped = recorded - timedelta(minutes=3)
    with app.app_context(), Session(databases().main) as s:
        device_id, store_id = _device(s)
        ids = [INSERT.scalar(s, **_visit(event_id=f"ev-{i}", customer_id=card["customer_id"],
                                         card_id=card["card_id"], store_id=store_id,
                                         device_id=device_id, weak=bool(i),
                                         tapped_at=tapped if i else None,
                                         recorded_at=recorded)) for i in range(2)]
        rows = BY_CARD.all(s, card_id=card["card_id"])
        reference = s.execute(BY_CARD.statement, {"card_id": card["card_id"]}).all()
        assert [tuple(r) for r in rows] == [tuple(r) for r in reference]
        assert [r.id for r in rows] == ids
        assert [r.weak for r in rows] == [False, True]
        assert all(r.recorded_at == recorded and r.recorded_at.tzinfo is not None for r in rows)
        assert [r.at for r in rows] == [recorded, tapped]
        # the same transaction: the session sees the driver's rows before any commit
        assert s.scalar(select(func.count()).select_from(visits)
                        .where(visits.c.card_id == card["card_id"])) == 2
        s.rollback()
        assert BY_CARD.all(s, card_id=card["card_id"]) == []
        assert BY_CARD.first(s, card_id=card["card_id"]) is None
        assert BY_CARD.scalar(s, card_id=card["card_id"]) is None
        with pytest.raises(LookupError):
            BY_CARD.one(s, card_id=card["card_id"])


def test_driver_errors_come_as_sqlalchemy_errors(app, card):
    """A duplicate event id is SQLAlchemy's IntegrityError, as the tap's retry path expects."""
    with app.app_context(), Session(databases().main) as s:
        device_id, store_id = _device(s)
        values = _visit(event_id="dup", customer_id=card["customer_id"],
                        card_id=card["card_id"], store_id=store_id, device_id=device_id,
                        recorded_at=datetime.now(UTC))
        INSERT.scalar(s, **values)
        with pytest.raises(IntegrityError):
            INSERT.scalar(s, **values)
        s.rollback()


def test_pending_orm_changes_are_flushed_before_a_read(app, card):
    """Like Session.execute: an object added but not flushed is seen by the next read."""
    with app.app_context(), Session(databases().main) as s:
        device_id, store_id = _device(s)
        s.add(Visit(event_id="orm", customer_id=card["customer_id"], card_id=card["card_id"],
                    store_id=store_id, device_id=device_id, reader="r", method="qr", weak=False,
                    recorded_at=datetime.now(UTC)))
        assert len(BY_CARD.all(s, card_id=card["card_id"])) == 1
        s.rollback()


def test_a_missing_parameter_is_an_error_not_a_null(app):
    with app.app_context(), Session(databases().main) as s, pytest.raises(KeyError):
        BY_CARD.all(s)


def test_a_list_parameter_is_refused_when_prepared():
    statement = Prepared(select(visits.c.id).where(
        visits.c.method.in_(bindparam("methods", expanding=True))))
    from sqlalchemy.dialects import sqlite

    with pytest.raises(ValueError, match="list parameter"):
        statement._for(sqlite.dialect())
