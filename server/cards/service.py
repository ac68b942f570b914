"""Issue, replace and check cards. Every other card of a replaced customer stops at once."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.cards import sun, token
from server.cards.keys import CardKeyring, load_keyring
from server.cards.models import REASONS, Card, CardFlag
from server.cards.schemas import CardIn
from server.cards.sun_keys import SunKeyring, load_sun_keyring, verify_any
from server.customers.models import Customer
from server.db import flush_or_replay, utcnow
from server.devices.auth import Principal
from server.hotsql import Prepared
from server.privacy import audit
from server.secrets_file import KeyMap, WatchedFile
from server.staff.models import CARD_ROLES

cards, customers, card_flags = Card.__table__, Customer.__table__, CardFlag.__table__
# a card and its customer in one read: the first step of every tap, purchase, redemption
CARD_SELECT = select(
    cards.c.id, cards.c.kind, cards.c.status, cards.c.status_reason, cards.c.generation,
    cards.c.nfc_uid, cards.c.customer_id, cards.c.replaced_by, cards.c.sun,
    customers.c.tier, customers.c.points, customers.c.language, customers.c.tier_review_at,
).select_from(cards.join(customers, customers.c.id == cards.c.customer_id))
_CARD_BY_ID = Prepared(CARD_SELECT.where(cards.c.id == bindparam("card_id")))


def keyring() -> CardKeyring:
    """The app's card keys, re-read when the key file changes (docs/KEYS.md).

    The file is checked at most once per ``KEY_FILE_CHECK_INTERVAL`` seconds (default 1);
    a token naming a key id this process lacks makes it look at once (a stat, and a
    forced re-read at most once per interval): the key was added a moment ago.
    """
    interval = float(current_app.config.get("KEY_FILE_CHECK_INTERVAL", 1.0))
    watched = current_app.extensions.get("loyalty.card_keys")
    if watched is None:
        def load(path: str) -> CardKeyring:
            ring = load_keyring(path)
            return dataclasses.replace(ring, keys=KeyMap(
                ring.keys, lambda key_id: watched.refresh().keys.known(key_id)))

        watched = WatchedFile(current_app.config["CARD_KEYS_FILE"], load, interval)
        current_app.extensions["loyalty.card_keys"] = watched
    watched.interval = interval
    return watched.get()


def card_url(tok: str) -> str:
    return f"{current_app.config['CARD_BASE_URL']}/c/{tok}"


def _result(card: Card, replaced: list[str]) -> dict:
    key = keyring().keys.get(card.key_id)
    if key is None:  # a replayed issue of a card whose key was retired since
        raise Problem("card-token-unknown-key",
                      "this card's key has been retired: issue a replacement card")
    tok = token.encode(card.key_id, key, bytes.fromhex(card.id),
                       card.generation)
    url = card_url(tok)
    return {"card_id": card.id, "customer_id": card.customer_id, "kind": card.kind,
            "generation": card.generation, "status": card.status, "token": tok, "url": url,
            "qr_text": url.upper(), "replaced": replaced, "sun": bool(card.sun)}


def _authorise(principal: Principal, customer: Customer, req: CardIn) -> None:
    staff_ok = principal.staff is not None and principal.staff.role in CARD_ROLES
    if req.replace:
        if not staff_ok:
            raise Problem("staff-required", "replacing a card needs a desk, manager or admin")
        return
    if staff_ok:
        return
    window = timedelta(seconds=current_app.config["KIOSK_ISSUE_WINDOW"])
    fresh = customer.created_at > datetime.now(UTC) - window
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
    uid = req.uid.upper() if req.uid else None
    # a 424 card issued again (to this or another customer) goes on counting where it was:
    # a URL read from it before must stay a replay
    counter = (main.scalar(select(func.max(cards.c.sun_counter)).where(cards.c.nfc_uid == uid))
               if req.sun else None)
    # an NFC card whose UID is not known yet is still to be written: it waits, refused at
    # every till, until the kiosk has read it back (activate); older waiting ones are void
    pending = req.kind == "nfc" and uid is None
    if pending:
        for stale in main.scalars(select(Card).where(
                Card.customer_id == customer_id, Card.status == "pending")):
            stale.status, stale.status_reason, stale.revoked_at = "void", "superseded", utcnow()
    card = Card(id=secrets.token_bytes(8).hex(), customer_id=customer_id, kind=req.kind,
                generation=generation, key_id=key_id, status="pending" if pending else "active",
                nfc_uid=uid, issue_event_id=event_id, sun=req.sun, sun_counter=counter,
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
    previous = flush_or_replay(main, lambda: _replay(main, customer_id, event_id))
    if previous is not None:
        return previous, False
    if req.replace:
        audit.record(main, principal.actor, "card.replace", customer_id, view="cards",
                     detail={"reason": req.reason, "new": card.id, "revoked": replaced})
    return _result(card, replaced), True


def _own_card(main: Session, principal: Principal, card_id: str) -> Card:
    """A card the caller may activate or void: the kiosk that issued it, or desk staff."""
    card = main.scalar(select(Card).where(Card.id == card_id).with_for_update())
    if card is None:
        raise Problem("card-not-found")
    staff_ok = principal.staff is not None and principal.staff.role in CARD_ROLES
    if not staff_ok and not (principal.kind == "device"
                             and card.issued_by_device_id == principal.id):
        raise Problem("staff-required", "only the kiosk that issued this card, or a member of "
                      "staff, may activate or void it")
    return card


def activate(main: Session, principal: Principal, card_id: str, uid: str) -> dict:
    """Make a pending NFC card active, with the UID it was written on and read back from.

    Idempotent: the same UID again answers the card as it is.

    Raises:
        Problem: ``card-not-found``, ``staff-required``, ``card-not-pending``.
    """
    card = _own_card(main, principal, card_id)
    uid = uid.upper()
    if card.status == "active" and card.nfc_uid == uid:
        return _result(card, [])
    if card.status != "pending":
        raise Problem("card-not-pending", f"this card is {card.status}",
                      card_status=card.status)
    card.status, card.nfc_uid = "active", uid
    main.flush()
    return _result(card, [])


def void(main: Session, principal: Principal, card_id: str, reason: str) -> dict:
    """Give up a pending card (its write failed or the customer left); idempotent.

    Raises:
        Problem: ``card-not-found``, ``staff-required``, ``card-not-pending``.
    """
    card = _own_card(main, principal, card_id)
    if card.status == "pending":
        card.status, card.status_reason, card.revoked_at = "void", reason, utcnow()
        main.flush()
    elif card.status != "void":
        raise Problem("card-not-pending", f"this card is {card.status}",
                      card_status=card.status)
    return {"card_id": card.id, "status": card.status, "reason": card.status_reason}


def _staff_card(main: Session, principal: Principal, card_id: str) -> tuple[Card, Customer]:
    """A card a desk, manager or admin is changing, locked for the change."""
    if principal.staff is None or principal.staff.role not in CARD_ROLES:
        raise Problem("staff-required", "blocking or unblocking a card needs a desk, manager "
                      "or admin")
    card = main.scalar(select(Card).where(Card.id == card_id).with_for_update())
    if card is None:
        raise Problem("card-not-found")
    return card, main.get(Customer, card.customer_id)


def _state(card: Card) -> dict:
    return {"card_id": card.id, "customer_id": card.customer_id, "kind": card.kind,
            "status": card.status, "reason": card.status_reason,
            "replaced_by": card.replaced_by}


def block(main: Session, principal: Principal, card_id: str, reason: str,
          note: str | None = None) -> dict:
    """Stop an active card (lost, stolen, damaged, other): every till answers 410
    ``card-revoked`` with the reason until it is unblocked. Blocking it again changes nothing.

    Raises:
        Problem: ``staff-required``, ``card-not-found``, ``card-not-active``.
    """
    card, _customer = _staff_card(main, principal, card_id)
    if card.status == "revoked" and card.replaced_by is None and card.status_reason in REASONS:
        return _state(card)  # already blocked: a second click, a retried request
    if card.status != "active":
        raise Problem("card-not-active", f"this card is {card.status}", card_status=card.status)
    card.status, card.status_reason, card.revoked_at = "revoked", reason, utcnow()
    main.flush()
    audit.record(main, principal.actor, "card.block", card.customer_id, view="cards",
                 detail={"card": card.id, "reason": reason, "note": note or None})
    return _state(card)


def unblock(main: Session, principal: Principal, card_id: str, reason: str,
            note: str | None = None) -> dict:
    """Let a blocked card work again (found, blocked by mistake). A replaced, voided or
    erased customer's card stays revoked; so does one whose kind the customer already has
    active again, or whose key was retired meanwhile. Unblocking an active card changes
    nothing.

    Raises:
        Problem: ``staff-required``, ``card-not-found``, ``card-not-blocked``,
            ``customer-erased``, ``card-exists``, ``card-token-unknown-key``.
    """
    card, customer = _staff_card(main, principal, card_id)
    if card.status == "active":
        return _state(card)
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    if (card.status != "revoked" or card.replaced_by is not None
            or card.status_reason not in REASONS):
        state = "replaced" if card.replaced_by else card.status
        raise Problem("card-not-blocked", f"this card is {state} ({card.status_reason}): "
                      "issue a new card instead", card_status=card.status,
                      replaced=card.replaced_by is not None)
    other = main.scalar(select(Card.id).where(Card.customer_id == card.customer_id,
                                              Card.kind == card.kind, Card.status == "active",
                                              Card.id != card.id))
    if other is not None:
        raise Problem("card-exists", "the customer has another active card of this kind",
                      card_id=other)
    if keyring().keys.get(card.key_id) is None:
        raise Problem("card-token-unknown-key",
                      "this card's key has been retired: issue a replacement card")
    blocked_for = card.status_reason
    card.status, card.status_reason, card.revoked_at = "active", None, None
    main.flush()
    audit.record(main, principal.actor, "card.unblock", card.customer_id, view="cards",
                 detail={"card": card.id, "reason": reason, "note": note or None,
                         "was": blocked_for})
    return _state(card)


def card_by_token(main: Session, text: str):
    """``(card row, token generation)`` for a token or card URL; the card may be inactive.

    Raises:
        Problem: a ``card-token-*`` type, or ``card-not-found``.
    """
    try:
        _key_id, card_id, generation = token.decode(text, keyring().keys)
    except token.InvalidToken as exc:
        raise Problem(exc.code, str(exc)) from None
    row = _CARD_BY_ID.first(main, card_id=card_id.hex())
    if row is None:
        raise Problem("card-not-found", "this card is not known to the loyalty service")
    return row, generation


def check_active(row, generation: int | None) -> None:
    """Refuse a revoked or replaced card, or a token of an older generation.

    Raises:
        Problem: ``card-pending`` (not written yet), ``card-revoked`` (with the reason;
            ``void`` for a card whose write was given up) or ``card-superseded``.
    """
    if row.status == "pending":
        raise Problem("card-pending", "this card was issued but not yet written and read back",
                      card_id=row.id)
    if row.status == "void":
        raise Problem("card-revoked", "this card's write was given up", reason="void",
                      replaced=False, card_id=row.id)
    if row.status != "active":
        state = "replaced" if row.replaced_by else row.status
        reason = row.status_reason or state
        raise Problem("card-revoked", f"card {state} ({reason})", reason=reason,
                      replaced=bool(row.replaced_by), card_id=row.id)
    if generation is not None and generation != row.generation:
        raise Problem("card-superseded", card_id=row.id)


def active_card(main: Session, text: str):
    """The active card row of a token or card URL (purchases, redemptions)."""
    row, generation = card_by_token(main, text)
    check_active(row, generation)
    return row


# --------------------------------------------------------------------------- NTAG 424 DNA


def sun_keyring() -> SunKeyring:
    """The app's SUN key sets (``SUN_KEYS_FILE``), re-read when the file changes."""
    interval = float(current_app.config.get("KEY_FILE_CHECK_INTERVAL", 1.0))
    watched = current_app.extensions.get("loyalty.sun_keys")
    if watched is None:
        watched = WatchedFile(current_app.config["SUN_KEYS_FILE"], load_sun_keyring, interval)
        current_app.extensions["loyalty.sun_keys"] = watched
    watched.interval = interval
    return watched.get()


def sun_settings() -> tuple[sun.SunParams, sun.MacInput]:
    """The SUN parameter names and MAC input of the configuration (parsed once per app)."""
    cached = current_app.extensions.get("loyalty.sun_settings")
    if cached is None:
        config = current_app.config
        params = sun.SunParams.from_config(config.get("SUN_PICC_PARAMS"),
                                           config.get("SUN_ENC_PARAMS"),
                                           config.get("SUN_CMAC_PARAMS"))
        mac_input = config.get("SUN_MAC_INPUT") or "auto"
        if isinstance(mac_input, str) and mac_input.strip().isdigit():
            mac_input = int(mac_input)
        elif mac_input not in ("auto", "empty", "picc", "enc") and not isinstance(mac_input, int):
            raise ValueError(f"SUN_MAC_INPUT {mac_input!r}: auto, empty, picc, enc or an index")
        cached = current_app.extensions["loyalty.sun_settings"] = (params, mac_input)
    return cached


def is_sun_url(text: str) -> bool:
    """Whether a tapped text is a SUN URL (by its query parameters; no crypto)."""
    return sun.is_sun(text, sun_settings()[0])


def card_by_sun(main: Session, text: str):
    """``(card row, SunResult)`` of a SUN URL; the card may be inactive.

    Raises:
        Problem: a ``sun-*`` type, or ``card-not-found`` (no card has the verified UID).
    """
    params, mac_input = sun_settings()
    try:
        _set_id, result = verify_any(text, sun_keyring(), mac_input=mac_input, params=params)
    except sun.InvalidSun as exc:
        raise Problem(exc.code, str(exc)) from None
    rows = main.execute(CARD_SELECT.where(cards.c.nfc_uid == result.uid.hex().upper())
                        .order_by(cards.c.issued_at.desc())).all()
    if not rows:
        raise Problem("card-not-found", "no card was issued for this NTAG 424 DNA card's UID")
    active = [r for r in rows if r.status == "active"]
    return (active or rows)[0], result


def claim_counter(main: Session, card_id: str, counter: int) -> bool:
    """Accept ``counter`` for the card if it is above the last one accepted; False if not.

    One conditional UPDATE in the caller's transaction: of two taps with the same counter,
    the second waits for the first's row lock and then finds nothing to update.
    """
    result = main.execute(
        update(cards).where(cards.c.id == card_id,
                            or_(cards.c.sun_counter.is_(None), cards.c.sun_counter < counter))
        .values(sun_counter=counter))
    return result.rowcount == 1


def last_counter(main: Session, card_id: str) -> int | None:
    return main.scalar(select(cards.c.sun_counter).where(cards.c.id == card_id))


# ``Session.info`` key: a list where ``record_flag`` leaves its statement instead of writing it
DEFERRED_FLAGS = "loyalty.deferred_flags"


def record_flag(main: Session, *, customer_id: str, card_id: str, kind: str, store_id: int | None,
                device_id: int | None, event_id: str | None, detail: dict | None) -> None:
    """Put a flag on the customer's file in a transaction of its own, committed at once.

    The request that sees a replay answers an error, so its own transaction is rolled back;
    the flag must stay. A repeated ``event_id`` (a till retrying) adds nothing.
    """
    dialect = main.get_bind().dialect.name
    values = {"customer_id": customer_id, "card_id": card_id, "kind": kind,
              "store_id": store_id, "device_id": device_id, "event_id": event_id,
              "at": utcnow(), "detail": detail}
    if dialect == "postgresql":
        statement = postgresql.insert(card_flags).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(card_flags).values(values).on_conflict_do_nothing()
    else:
        statement = insert(card_flags).values(values)
    deferred = main.info.get(DEFERRED_FLAGS)
    if deferred is not None:
        # one event of a batch of taps (server/taps/batch.py): its savepoint may be rolled
        # back and another connection could not write on SQLite while the batch holds the
        # lock; the batch writes the flag after the event, in its own transaction
        deferred.append(statement)
        return
    with Session(main.get_bind()) as own:
        own.execute(statement)
        own.commit()


_FLAGS = Prepared(
    select(card_flags.c.kind).distinct()
    .join(cards, cards.c.id == card_flags.c.card_id)
    .where(card_flags.c.customer_id == bindparam("customer_id"), cards.c.status == "active")
    .order_by(card_flags.c.kind))


def customer_flags(main: Session, customer_id: str) -> list[str]:
    """The kinds of flag on the customer's active cards (a replacement card starts clean)."""
    return [row.kind for row in _FLAGS.all(main, customer_id=customer_id)]
