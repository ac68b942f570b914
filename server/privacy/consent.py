"""Consent as a ledger: every decision is a new row; the current state is the latest per purpose.

Nothing reads a consent from anywhere else: segments and campaigns select their customers
with ``consenting(purpose)``, a query over the ledger, so a withdrawal counts from the moment
it is recorded.
"""

from __future__ import annotations

import tomllib
from datetime import date
from functools import cache
from pathlib import Path

from sqlalchemy import Select, and_, exists, select, update
from sqlalchemy.orm import Session, aliased

from server.api.problems import Problem
from server.customers.models import Customer
from server.devices.auth import Principal
from server.privacy import audit
from server.privacy.models import PURPOSES, Consent

TEXTS_FILE = Path(__file__).with_name("consent_texts.toml")


@cache
def texts() -> dict:
    """``{"current": version, "versions": {version: {purpose: {language: text}}}}``."""
    with TEXTS_FILE.open("rb") as fh:
        data = tomllib.load(fh)
    for version, purposes in data["versions"].items():
        missing = set(PURPOSES) - set(purposes)
        if missing:
            raise ValueError(f"consent texts {version}: no text for {sorted(missing)}")
    return data


def check_version(version: str) -> None:
    """Refuse a consent that names a text version we never published.

    Raises:
        Problem: ``consent-version-unknown``.
    """
    if version not in texts()["versions"]:
        raise Problem("consent-version-unknown",
                      f"consent text version {version!r} is not published",
                      known=sorted(texts()["versions"]))


def consenting(purpose: str) -> Select:
    """``SELECT customer_id`` of every customer whose latest decision for ``purpose`` is yes.

    Erased customers are left out whatever the ledger says.

    "Latest" is "no newer row for the same customer and purpose" (``NOT EXISTS``) rather than
    a ``max(id)`` grouped over the whole ledger: with the index on (customer_id, purpose, id)
    the database checks a few candidates by index instead of aggregating every customer's
    decisions (a segment over 1M customers: 4M ledger rows aggregated, twice).
    """
    if purpose not in PURPOSES:
        raise ValueError(purpose)
    newer = aliased(Consent)
    return (select(Consent.customer_id)
            .join(Customer, and_(Customer.id == Consent.customer_id,
                                 Customer.erased_at.is_(None)))
            .where(Consent.purpose == purpose, Consent.granted.is_(True),
                   ~exists().where(newer.customer_id == Consent.customer_id,
                                   newer.purpose == purpose, newer.id > Consent.id)))


def current(session: Session, customer_id: str) -> dict[str, dict]:
    """The state of each purpose: ``{purpose: {granted, version, language, channel, at}}``."""
    state = {p: {"granted": False, "version": None, "language": None, "channel": None,
                 "at": None} for p in PURPOSES}
    for row in session.execute(
        select(Consent.purpose, Consent.granted, Consent.text_version, Consent.language,
               Consent.channel, Consent.recorded_at)
        .where(Consent.customer_id == customer_id).order_by(Consent.id)
    ):
        state[row.purpose] = {"granted": row.granted, "version": row.text_version,
                              "language": row.language, "channel": row.channel,
                              "at": row.recorded_at.isoformat()}
    return state


def flags(session: Session, customer_id: str) -> dict[str, bool]:
    return {p: s["granted"] for p, s in current(session, customer_id).items()}


def history(session: Session, customer_id: str) -> list[dict]:
    """Every decision, oldest first, with where it was made. ``first`` marks the first
    decision on a purpose: a first "no" was never given, a later one is a withdrawal."""
    seen: set[str] = set()
    out = []
    for r in session.scalars(select(Consent).where(Consent.customer_id == customer_id)
                             .order_by(Consent.id)):
        out.append({"purpose": r.purpose, "granted": r.granted, "first": r.purpose not in seen,
                    "version": r.text_version, "language": r.language, "channel": r.channel,
                    "device_id": r.device_id, "staff_id": r.staff_id,
                    "at": r.recorded_at.isoformat()})
        seen.add(r.purpose)
    return out


def append(session: Session, principal: Principal | None, customer_id: str,
           decisions: dict[str, bool], *, version: str, language: str | None,
           channel: str) -> dict[str, bool]:
    """Record the decisions that change something (or are the first); return those.

    ``principal`` is the device or staff member who recorded them (None: a job).
    """
    before = current(session, customer_id)
    # a first decision is recorded even when it is "no": declining is a decision too
    changed = {p: v for p, v in decisions.items()
               if before[p]["at"] is None or before[p]["granted"] != v}
    device_id = principal.id if principal is not None and principal.kind == "device" else None
    staff_id = principal.staff.id if principal is not None and principal.staff else None
    for purpose, granted in changed.items():
        session.add(Consent(customer_id=customer_id, purpose=purpose, granted=granted,
                            text_version=version, language=language, channel=channel,
                            device_id=device_id, staff_id=staff_id))
    return changed


def change(main: Session, vault, principal: Principal, customer_id: str,
           decisions: dict[str, bool], *, version: str, language: str | None,
           channel: str, view: str = "consents") -> dict:
    """A customer changes their mind, through a staff member or a device.

    Withdrawing profiling clears the coarse profile (sex, age band) at once; giving it
    derives the profile again from the vault. The terms cannot be withdrawn on their own:
    leaving the programme is an erasure.

    Raises:
        Problem: ``customer-not-found``, ``customer-erased``, ``consent-version-unknown``,
            ``consent-terms-withdrawal``.
    """
    from server.enrolment.service import age_band
    from server.vault.service import read_personal_data

    customer = main.get(Customer, customer_id)
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:
        raise Problem("customer-erased")
    check_version(version)
    if decisions.get("terms") is False:
        raise Problem("consent-terms-withdrawal")
    changed = append(main, principal, customer_id, decisions, version=version,
                     language=language, channel=channel)
    if changed.get("profiling") is False:
        main.execute(update(Customer).where(Customer.id == customer_id)
                     .values(sex=None, age_band=None))
    elif changed.get("profiling") is True:
        personal = read_personal_data(vault, customer_id) or {}
        birth = personal.get("birth_date")
        main.execute(update(Customer).where(Customer.id == customer_id).values(
            sex=personal.get("gender"),
            age_band=age_band(date.fromisoformat(birth)) if birth else None))
    if changed:
        detail = {"changed": changed, "version": version, "channel": channel}
        if changed.get("profiling") is True:
            detail["profile"] = "derived from the vault"
        audit.record(main, principal.actor, "consent.change", customer_id, view=view,
                     detail=detail)
    return {"customer_id": customer_id, "changed": changed,
            "consents": current(main, customer_id)}
