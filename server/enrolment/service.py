"""Enrol a customer: neutral id and consents in the main database, identity in the vault."""

from __future__ import annotations

import secrets
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.api.problems import Problem
from server.customers.models import Customer, SurveyResponse
from server.customers.service import summary
from server.db import flush_or_replay, utcnow
from server.devices.auth import Principal, hash_password
from server.enrolment.schemas import EnrolmentIn
from server.loyalty import ledger, programmes
from server.loyalty.models import PointsEntry
from server.loyalty.programme import expiry_date
from server.privacy import audit, consent
from server.vault.service import display_name, store_personal_data

# Crockford's base32: no I, L, O, U, so a code read aloud or typed is hard to get wrong
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_customer_id() -> str:
    """A random neutral id such as ``C-7F3K-9Q2M`` (40 random bits)."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(8))
    return f"C-{chars[:4]}-{chars[4:]}"


def age_band(birth: date, today: date | None = None) -> str:
    today = today or date.today()
    age = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    for upper, band in ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"),
                        (55, "45-54"), (65, "55-64")):
        if age < upper:
            return band
    return "65+"


def _result(main: Session, vault: Session, customer: Customer) -> dict:
    welcome = main.scalar(select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(
        PointsEntry.customer_id == customer.id, PointsEntry.kind == "welcome")) or 0
    return {**summary(vault, customer.id, customer.language, customer.tier, customer.points),
            "welcome_points": welcome, "consents": consent.flags(main, customer.id)}


def _replay(main: Session, vault: Session, device: Principal, event_id: str) -> dict | None:
    customer = main.scalar(select(Customer).where(Customer.enrol_event_id == event_id))
    if customer is None:
        return None
    if customer.enrolled_by_device_id != device.id:
        raise Problem("event-id-conflict")
    return _result(main, vault, customer)


def enrol(main: Session, vault: Session, device: Principal, req: EnrolmentIn) -> tuple[dict, bool]:
    """Create the customer of an enrolment, or return the one this event already created.

    Returns:
        ``(result, created)``; ``created`` is False for a replayed event id.

    Raises:
        Problem: ``consent-required`` without the terms; ``event-id-conflict``.
    """
    event_id = str(req.event_id)
    previous = _replay(main, vault, device, event_id)
    if previous is not None:
        return previous, False
    if not req.consents.terms:
        raise Problem("consent-required")
    consent.check_version(req.consent_version)

    customer_id = new_customer_id()
    while main.get(Customer, customer_id) is not None:  # 1 in a trillion, but never twice
        customer_id = new_customer_id()
    profiling = req.consents.profiling
    customer = Customer(
        id=customer_id,
        language=req.language,
        home_store_id=device.store_id,
        enrolled_by_device_id=device.id,
        enrol_event_id=event_id,
        tier="member",
        points=0,
        sex=req.gender if profiling else None,
        age_band=age_band(req.birth_date) if profiling and req.birth_date else None,
        pin_hash=hash_password(req.pin) if req.pin else None,
    )
    main.add(customer)
    # claims the event id; a concurrent twin fails here and answers with our result
    previous = flush_or_replay(main, lambda: _replay(main, vault, device, event_id))
    if previous is not None:
        return previous, False

    _version, programme = programmes.current(main)
    welcome = programme.enrolment.welcome_points
    if welcome:
        ledger.post(main, customer_id, welcome, "welcome", reason="welcome bonus",
                    expires_at=expiry_date(programme, utcnow()))
        set_committed_value(customer, "points", welcome)  # the ledger's UPDATE set it

    consent.append(main, device, customer_id, req.consents.model_dump(),
                   version=req.consent_version, language=req.language, channel="kiosk")
    if req.survey:
        main.add(SurveyResponse(customer_id=customer_id, answers=req.survey))

    personal = {
        "first_name": req.first_name,
        "last_name": req.last_name,
        "email": str(req.email) if req.email else None,
        "phone": req.phone,
        "birth_date": req.birth_date.isoformat() if req.birth_date else None,
        "gender": req.gender,
        "address": req.address,
    }
    store_personal_data(vault, customer_id, personal, device.country or "FR")
    audit.record(main, device.actor, "personal-data.create", customer_id, view="enrolment",
                 detail={"fields": sorted(k for k, v in personal.items() if v)})
    main.flush()
    return {
        "customer_id": customer_id,
        "display_name": display_name(personal),
        "language": req.language,
        "tier": customer.tier,
        "points": customer.points,
        "welcome_points": welcome,
        "consents": req.consents.model_dump(),
    }, True
