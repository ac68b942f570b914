"""Failed sign-ins counted in ``auth_failures``, and the lockouts they cause.

Every way a staff member signs in goes through here: the back office's login form, the API's
Basic credential (``Authorization`` or ``X-Staff-Authorization``) and staff mode on a kiosk
(PIN or staff card). A failure adds one row per *subject* it concerns:

- ``user:<name>`` (``STAFF_LOCKOUT_ATTEMPTS``, default 5): the name typed, lower-cased, whether
  or not such an account exists, so a lock never tells who works here. The password, the
  kiosk PIN and the API credential count together: they guard the same account.
- ``card:<hash>`` (the same limit): a staff card's UID tapped on a kiosk.
- ``addr:<client address>`` (``LOGIN_LOCKOUT_ADDRESS``, default 20): the back office and the
  API without a device, so nobody tries one password against every name.
- ``device:<id>`` (``STAFF_LOCKOUT_DEVICE``, default 20): a kiosk or till confirming with a
  staff credential, or opening staff mode.

A subject with its limit of failures within ``STAFF_LOCKOUT_WINDOW`` seconds is locked until
its oldest counted failure leaves the window; while locked nothing is verified at all, the
right secret is refused too and no failure is added. A success clears nothing: otherwise
anyone who knows one password (their own) could reset the address's count between guesses
at other names, and the owner's daily logins would give an attacker a fresh budget on their
name; the rows simply age out of the window (a user who mistyped four times and then got in
is one more typo away from a lock for at most one window). ``clear`` is for a manager who
unlocks a name on purpose. Rows are a table rather than memory so that every worker and
node counts the same; checking is one indexed query.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app, request
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.db import utcnow
from server.staff.models import AuthFailure

log = logging.getLogger(__name__)
failures = AuthFailure.__table__
# rows older than this many windows are deleted when a failure is written
KEEP_WINDOWS = 4


def window() -> timedelta:
    return timedelta(seconds=int(current_app.config["STAFF_LOCKOUT_WINDOW"]))


def user(name: str | None) -> dict[str, int]:
    """The subject of a user name (known or not), with its limit."""
    subject = "user:" + (name or "").strip().lower()[:64]
    return {subject: int(current_app.config["STAFF_LOCKOUT_ATTEMPTS"])}


def card(digest: str) -> dict[str, int]:
    """The subject of a staff card (its UID's hash), with its limit."""
    return {f"card:{digest[:32]}": int(current_app.config["STAFF_LOCKOUT_ATTEMPTS"])}


def device(device_id: int) -> dict[str, int]:
    """The subject of a kiosk or till signing staff in, with its limit."""
    return {f"device:{device_id}": int(current_app.config["STAFF_LOCKOUT_DEVICE"])}


def address() -> dict[str, int]:
    """The subject of the client's address (the proxy's, unless ProxyFix is set up)."""
    where = (request.remote_addr or "unknown")[:64]
    return {f"addr:{where}": int(current_app.config["LOGIN_LOCKOUT_ADDRESS"])}


def check(main: Session, subjects: dict[str, int]) -> None:
    """Refuse at once if any of ``subjects`` has reached its limit within the window.

    Raises:
        Problem: ``staff-locked-out``, with ``retry_after`` (seconds until it opens again).
    """
    since = utcnow() - window()
    rows = main.execute(
        select(failures.c.subject, func.count(), func.min(failures.c.at))
        .where(failures.c.subject.in_(list(subjects)), failures.c.at > since)
        .group_by(failures.c.subject)
    ).all()
    locked = {subject: oldest for subject, count, oldest in rows if count >= subjects[subject]}
    if locked:
        # open again when the oldest counted failure leaves the window (the latest of them)
        retry = max(1, int((max(locked.values()) + window() - utcnow()).total_seconds()) + 1)
        log.info("sign-in refused for %s s: too many failures by %s", retry,
                 "/".join(sorted(s.split(":", 1)[0] for s in locked)))  # never the name
        raise Problem("staff-locked-out", "too many failed attempts: wait, or ask a manager",
                      retry_after=retry)


def fail(main: Session, subjects: dict[str, int]) -> None:
    """Count a failure for each subject, committed on its own: the request itself fails."""
    now = utcnow()
    with Session(main.get_bind()) as own:
        own.execute(insert(failures), [{"subject": s, "at": now} for s in subjects])
        own.execute(delete(failures).where(failures.c.at < now - KEEP_WINDOWS * window()))
        own.commit()


def clear(main: Session, subjects: dict[str, int]) -> int:
    """Forget the failures of ``subjects`` (a manager unlocking a name); how many rows went."""
    result = main.execute(delete(failures).where(failures.c.subject.in_(list(subjects))))
    return result.rowcount or 0
