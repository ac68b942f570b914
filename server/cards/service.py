"""Issue, replace and check cards. Every other card of a replaced customer stops at once."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards import token
from server.cards.keys import CardKeyring, load_keyring
from server.cards.models import Card
from server.cards.schemas import CardIn
from server.customers.models import Customer
from server.db import utcnow
from server.devices.auth import Principal
from server.privacy.models import AuditEntry
from server.staff.models import CARD_ROLES


def keyring() -> CardKeyring:
    """The app's card keys, read once per process from the key file."""
    ring = current_app.extensions.get("loyalty.card_keys")
    if ring is None:
        ring = load_keyring(current_app.config["CARD_KEYS_FILE"])
        current_app.extensions["loyalty.card_keys"] = ring
    return ring


def card_url(tok: str) -> str:
    return f"{current_app.config['CARD_BASE_URL']}/c/{tok}"


def _result(card: Card, replaced: list[str]) -> dict:
    tok = token.encode(card.key_id, keyring().keys[card.key_id], bytes.fromhex(card.id),
                       card.generation)
    url = card_url(tok)
    return {"card_id": card.id, "customer_id": card.customer_id, "kind": card.kind,
            "generation": card.generation, "status": card.status, "token": tok, "url": url,
            "qr_text": url.upper(), "replaced": replaced}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _authorise(principal: Principal, customer: Customer, req: CardIn) -> None:
    staff_ok = principal.staff is not None and principal.staff.role in CARD_ROLES
    if req.replace:
        if not staff_ok:
            raise Problem("staff-required", "replacing a card needs a desk, manager or admin")
        return
    if staff_ok:
        return
    window = timedelta(seconds=current_app.config["KIOSK_ISSUE_WINDOW"])
    fresh = _aware(customer.created_at) > datetime.now(UTC) - window
    if not (principal.kind == "device" and customer.enrolled_by_device_id == principal.id
            and fresh):
        raise Problem("staff-required",
                      "a kiosk issues cards only to the customers it has just enrolled")


def _replay(main: Session, customer_id: str, event_id: str) -> dict | None:
    card = main.scalar(select(Card).where(Card.issue_event_id == event_id))
    if card is None:
        return None
    if card.customer_id != customer_id:
        raise Problem("event-id-conflict")
    replaced = list(main.scalars(select(Card.id).where(Card.replaced_by == card.id)))
    return _result(card, replaced)


def issue(main: Session, principal: Principal, customer_id: str, req: CardIn) -> tuple[dict, bool]:
    """Issue a card; with ``replace``, revoke every other active card of the customer.

    Returns:
        ``(result, created)``; ``created`` is False for a replayed event id.

    Raises:
        Problem: ``customer-not-found``, ``staff-required``, ``card-exists``,
            ``event-id-conflict``.
    """
    event_id = str(req.event_id)
    previous = _replay(main, customer_id, event_id)
    if previous is not None:
        return previous, False
    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    _authorise(principal, customer, req)

    active = list(main.scalars(
        select(Card).where(Card.customer_id == customer_id, Card.status == "active")
        .with_for_update()))
    if not req.replace and any(c.kind == req.kind for c in active):
        raise Problem("card-exists", "use replace with a reason to issue a new card",
                      card_id=next(c.id for c in active if c.kind == req.kind))
    latest = main.scalar(select(func.max(Card.generation))
                         .where(Card.customer_id == customer_id))
    generation = 0 if latest is None else latest + 1
    if generation > 255:
        raise Problem("bad-request", "this customer has had too many cards; call support")

    key_id, _ = keyring().signing_key()
    card = Card(id=secrets.token_bytes(8).hex(), customer_id=customer_id, kind=req.kind,
                generation=generation, key_id=key_id, status="active",
                nfc_uid=req.uid.upper() if req.uid else None, issue_event_id=event_id,
                issued_by_device_id=principal.id if principal.kind == "device" else None,
                issued_by_staff_id=principal.staff.id if principal.staff else None)
    main.add(card)
    replaced = []
    if req.replace:
        now = utcnow()
        for old in active:
            old.status, old.status_reason = "revoked", req.reason
            old.revoked_at, old.replaced_by = now, card.id
            replaced.append(old.id)
        main.add(AuditEntry(actor=principal.actor, action="card.replace",
                            customer_id=customer_id,
                            detail={"reason": req.reason, "new": card.id, "revoked": replaced}))
    try:
        main.flush()
    except IntegrityError:
        main.rollback()
        previous = _replay(main, customer_id, event_id)
        if previous is None:
            raise
        return previous, False
    return _result(card, replaced), True
