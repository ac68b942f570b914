"""A tap: verify the card, write the visit once per event id, build the record.

This is the hot path (DESIGN.md): Core statements, no ORM objects, one joined read of card
and customer, one insert, one vault read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards.models import Card
from server.cards.service import (
    CARD_SELECT,
    card_by_sun,
    card_by_token,
    check_active,
    claim_counter,
    customer_flags,
    is_sun_url,
    last_counter,
    record_flag,
)
from server.customers.models import Customer
from server.customers.service import summary
from server.db import commit_writes, undo_event
from server.devices.auth import Principal
from server.hotsql import Prepared
from server.loyalty import programmes
from server.loyalty.record import count_visit, figures, loyalty_view
from server.stores.models import Store
from server.taps import signals
from server.taps.models import Visit
from server.taps.schemas import TapIn
from server.tickets.models import OPEN_STATUSES, Ticket

cards, customers, visits = Card.__table__, Customer.__table__, Visit.__table__
tickets = Ticket.__table__
OPEN_TICKETS = 5
# the tap's statements, compiled once (server/hotsql.py: the hot path of DESIGN.md)
_VISIT_COLUMNS = ("event_id", "customer_id", "card_id", "store_id", "device_id", "reader",
                  "method", "weak", "tapped_at", "recorded_at")
# the visit, inserted from its customer's row taken FOR NO KEY UPDATE (PostgreSQL): the lock
# order of docs/ARCHITECTURE.md (the customer, then the aggregates the visit's trigger
# updates), in the one statement the tap runs anyway
_VISIT = Prepared(insert(visits).from_select(
    _VISIT_COLUMNS,
    select(*(customers.c.id if c == "customer_id" else bindparam(c, type_=visits.c[c].type)
             for c in _VISIT_COLUMNS))
    .where(customers.c.id == bindparam("customer_id"))
    .with_for_update(key_share=True))
    .returning(visits.c.id))
_OPEN_TICKETS = Prepared(
    select(tickets.c.id, tickets.c.kind, tickets.c.status, tickets.c.subject, tickets.c.due_date)
    .where(tickets.c.customer_id == bindparam("customer_id"),
           tickets.c.status.in_(OPEN_STATUSES))
    .order_by(tickets.c.created_at.desc(), tickets.c.id.desc()).limit(OPEN_TICKETS))


def _card_by_uid(main: Session, device: Principal, uid: str):
    allowed = main.scalar(select(Store.allow_uid_only).where(Store.id == device.store_id))
    if not allowed:
        raise Problem("uid-only-disabled")
    rows = main.execute(CARD_SELECT.where(cards.c.nfc_uid == uid)).all()
    if not rows:
        raise Problem("card-not-found", "no card with this UID")
    active = [r for r in rows if r.status == "active"]
    return (active or rows)[0]


def _random_uid(uid: str) -> bool:
    """A 4-byte random UID (ISO/IEC 14443-3, first byte 08): a card hiding its real UID."""
    return len(uid) == 8 and uid.startswith("08")


def resolve(main: Session, device: Principal, req: TapIn):
    """Return ``(card row, method, flags, SUN counter or None)`` for what the reader saw.

    Raises:
        Problem: a token or SUN problem, ``card-not-found``, ``uid-only-disabled``,
            ``card-revoked``, ``card-superseded``, ``card-sun-required``.
    """
    flags: list[str] = []
    uid = req.uid.upper() if req.uid else None
    text = req.url or req.qr
    counter = None
    if text and is_sun_url(text):  # a card token URL has no query: its path is unchanged
        row, result = card_by_sun(main, text)
        generation, method, counter = None, "sun", result.counter
        if uid and uid != result.uid.hex().upper() and not _random_uid(uid):
            flags.append("uid-mismatch")
    elif text:
        row, generation = card_by_token(main, text)
        method = "url" if req.url else "qr"
        if uid and row.nfc_uid and row.nfc_uid != uid:
            flags.append("uid-mismatch")
    else:
        row, generation, method = _card_by_uid(main, device, uid), None, "uid"
        flags.append("weak")
    check_active(row, generation)
    if row.sun and method != "sun":
        raise Problem("card-sun-required", "this NTAG 424 DNA card is accepted only through "
                      "the URL it makes at each tap", card_id=row.id)
    return row, method, flags, counter


def _previous_visit(main: Session, event_id: str):
    return main.execute(select(visits.c.id, visits.c.device_id, visits.c.card_id, visits.c.weak)
                        .where(visits.c.event_id == event_id)).first()


def open_tickets(main: Session, customer_id: str, now: datetime) -> list[dict]:
    """The customer's open tickets, newest first (at most 5): one read of an index."""
    _, programme = programmes.current(main)  # cached: the local date costs no query
    today = now.astimezone(programme.zone).date()
    rows = _OPEN_TICKETS.all(main, customer_id=customer_id)
    return [{"id": r.id, "kind": r.kind, "status": r.status, "subject": r.subject,
             "due_date": r.due_date.isoformat() if r.due_date else None,
             "overdue": r.due_date is not None and r.due_date < today} for r in rows]


def _record(main: Session, vault: Session, row, store_code: str, flags: list[str],
            visit_id: int, replayed: bool, now: datetime) -> dict:
    numbers = figures(main, row.customer_id, now)
    flags = flags + [f for f in customer_flags(main, row.customer_id) if f not in flags]
    return {
        **summary(vault, row.customer_id, row.language, numbers.tier, numbers.points),
        "card": {"card_id": row.id, "kind": row.kind, "status": row.status,
                 "generation": row.generation},
        **loyalty_view(main, row.customer_id, figures=numbers, store_code=store_code, now=now,
                       language=row.language),
        "open_tickets": open_tickets(main, row.customer_id, now),
        "flags": flags,
        "visit_id": visit_id,
        "replayed": replayed,
    }


def _answer(main: Session, vault: Session, row, store_code: str, flags: list[str],
            visit_id: int, replayed: bool, now: datetime, record: bool) -> dict:
    """The customer record, or (``record`` false: a replayed tap nobody waits for) only
    what was written."""
    if not record:
        return {"visit_id": visit_id, "replayed": replayed, "card_id": row.id, "flags": flags}
    return _record(main, vault, row, store_code, flags, visit_id, replayed, now)


def tap(main: Session, vault: Session, device: Principal, req: TapIn, *,
        record: bool = True) -> dict:
    """Record a visit for a tap and return the customer record (a replay writes nothing).

    With ``record`` false (the batch of an agent's offline queue) the record is not built:
    ``{"visit_id", "replayed", "card_id", "flags"}`` only.

    Raises:
        Problem: see ``resolve``; ``event-id-conflict`` if another device used the event id.
    """
    event_id = str(req.event_id)
    try:
        row, method, flags, counter = resolve(main, device, req)
    except Problem as problem:
        # a retry of a tap that was recorded before its card was replaced still gets its
        # record: look for the first attempt only on this rare path, not on every tap
        if problem.slug not in ("card-revoked", "card-superseded"):
            raise
        previous = _previous_visit(main, event_id)
        if previous is None:
            raise
        if previous.device_id != device.id:
            raise Problem("event-id-conflict") from None
        row = main.execute(CARD_SELECT.where(cards.c.id == previous.card_id)).first()
        return _answer(main, vault, row, device.store_code, ["weak"] if previous.weak
                       else [], previous.id, True, datetime.now(UTC), record)
    now = datetime.now(UTC)
    at = signals.tap_time(req.tapped_at, now)  # an offline tap counts when it happened
    signal, detail = signals.check(main, row.id, device.store_id, event_id, at)
    if signal == "card-tap-rate" and _previous_visit(main, event_id) is None:
        record_flag(main, customer_id=row.customer_id, card_id=row.id, kind=signal,
                    store_id=device.store_id, device_id=device.id, event_id=event_id,
                    detail=detail)
        raise Problem("card-rate-limited", f"{detail['taps']} taps of this card within "
                      f"{detail['seconds']} s", card_id=row.id)
    if signal == "card-two-stores":
        record_flag(main, customer_id=row.customer_id, card_id=row.id, kind=signal,
                    store_id=device.store_id, device_id=device.id, event_id=event_id,
                    detail=detail)
        flags = [*flags, signal]
    if counter is not None and not claim_counter(main, row.id, counter):
        return _sun_replay(main, vault, device, row, event_id, counter, record)
    replayed = False
    store_code = device.store_code
    try:
        visit_id = _VISIT.scalar(
            main, event_id=event_id, customer_id=row.customer_id, card_id=row.id,
            store_id=device.store_id, device_id=device.id, reader=req.reader, method=method,
            weak="weak" in flags, tapped_at=req.tapped_at, recorded_at=now)
        count_visit(main, row.customer_id, device.store_id, store_code, visit_id, device.id, at)
    except IntegrityError:
        undo_event(main)
        previous = _previous_visit(main, event_id)
        if previous is None:
            raise
        if previous.device_id != device.id or previous.card_id != row.id:
            raise Problem("event-id-conflict") from None
        visit_id, replayed = previous.id, True
    if record:  # not in a batch: its taps are savepoints of the batch's one transaction
        commit_writes(main)  # the record is read after the write lock is released
    return _answer(main, vault, row, store_code, flags, visit_id, replayed, now, record)


def _sun_replay(main: Session, vault: Session, device: Principal, row, event_id: str,
                counter: int, record: bool = True) -> dict:
    """A SUN counter that did not grow: this tap's own retry, or a copy of an old read.

    Raises:
        Problem: ``card-replayed`` (and the customer's file is flagged), or
            ``event-id-conflict``.
    """
    previous = _previous_visit(main, event_id)
    if previous is not None:  # the till retried a tap that was recorded: same answer
        if previous.device_id != device.id or previous.card_id != row.id:
            raise Problem("event-id-conflict")
        return _answer(main, vault, row, device.store_code, ["weak"] if previous.weak
                       else [], previous.id, True, datetime.now(UTC), record)
    last = last_counter(main, row.id)
    undo_event(main)  # nothing of this tap is kept but the flag (and no lock is held for it)
    record_flag(main, customer_id=row.customer_id, card_id=row.id, kind="card-replayed",
                store_id=device.store_id, device_id=device.id, event_id=event_id,
                detail={"counter": counter, "last_accepted": last})
    raise Problem("card-replayed", f"read counter {counter} was already used (last accepted "
                  f"{last}): a copied or replayed card URL", card_id=row.id)
