"""Clone signals: a card seen in two stores minutes apart, or tapped faster than a person could.

One indexed read of the card's recent visits (``ix_visits_card_recorded``) answers both. Times
are when the card was *tapped* (``tapped_at``, sent by the till; the server's time when it is
missing), so taps an agent queued during an outage and replays in one burst are judged by when
they happened, not by when they arrived.

- ``CARD_TAP_LIMIT`` taps within ``CARD_TAP_WINDOW`` seconds: the tap is refused
  (429 ``card-rate-limited``) and the card flagged ``card-tap-rate``.
- A tap in another store within ``CLONE_STORE_MINUTES`` of the last one: accepted, but flagged
  ``card-two-stores`` on the customer's file (the cashier and the desk see it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from server.hotsql import Prepared
from server.taps.models import Visit

visits = Visit.__table__
# an agent can queue taps for a long outage; older tap times are taken as this old
MAX_TAP_AGE = timedelta(days=7)
_RECENT = Prepared(
    select(visits.c.store_id, func.coalesce(visits.c.tapped_at, visits.c.recorded_at).label("at"))
    .where(visits.c.card_id == bindparam("card_id"), visits.c.recorded_at > bindparam("since"),
           visits.c.event_id != bindparam("event_id"))
    .order_by(visits.c.recorded_at.desc()).limit(bindparam("n")))


def tap_time(tapped_at: datetime | None, now: datetime) -> datetime:
    """When the tap happened, as far as we believe the till: never later than now."""
    if tapped_at is None:
        return now
    at = tapped_at.replace(tzinfo=UTC) if tapped_at.tzinfo is None else tapped_at
    return min(max(at, now - MAX_TAP_AGE), now)


def check(main: Session, card_id: str, store_id: int, event_id: str, at: datetime
          ) -> tuple[str | None, dict]:
    """``(signal, detail)``: ``"card-tap-rate"``, ``"card-two-stores"`` or ``None``."""
    config = current_app.config
    limit, window = int(config["CARD_TAP_LIMIT"]), int(config["CARD_TAP_WINDOW"])
    stores = timedelta(minutes=int(config["CLONE_STORE_MINUTES"]))
    span = max(timedelta(seconds=window), stores)
    recent = _RECENT.all(main, card_id=card_id, since=at - span, event_id=event_id,
                         n=max(limit, 1) * 4)
    near = [r for r in recent if abs(_aware(r.at) - at) <= timedelta(seconds=window)]
    if limit and len(near) >= limit:
        return "card-tap-rate", {"taps": len(near) + 1, "seconds": window}
    for row in recent:
        if row.store_id != store_id and abs(_aware(row.at) - at) <= stores:
            minutes = round(abs(_aware(row.at) - at).total_seconds() / 60, 1)
            return "card-two-stores", {"other_store_id": row.store_id, "minutes": minutes}
    return None, {}


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
