"""Recording a till's daily sales without a card (``PUT /api/v1/anonymous-sales``)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.db import utcnow
from server.devices.auth import Principal
from server.loyalty import programmes
from server.loyalty.schemas import cents
from server.reports.models import AnonymousSales
from server.reports.schemas import AnonymousSalesIn

log = logging.getLogger(__name__)


def record(main: Session, till: Principal, req: AnonymousSalesIn) -> dict:
    """Keep this till's figures for the day and seller, replacing an earlier report.

    Raises:
        Problem: ``currency-mismatch``.
    """
    programme = programmes.current(main)[1]
    if req.currency != programme.currency:
        raise Problem("currency-mismatch", f"the programme runs in {programme.currency}")
    seller = req.seller or ""
    row = main.scalar(select(AnonymousSales).where(
        AnonymousSales.device_id == till.id, AnonymousSales.day == req.day,
        AnonymousSales.seller == seller).with_for_update())
    replaced = row is not None
    if row is None:
        row = AnonymousSales(device_id=till.id, store_id=till.store_id, day=req.day,
                             seller=seller)
        main.add(row)
    row.baskets, row.total_cents, row.currency = req.baskets, cents(req.total), req.currency
    row.reported_at = utcnow()
    main.flush()
    log.info("anonymous sales of device %s on %s: %d baskets", till.id, req.day, req.baskets)
    return {"day": req.day.isoformat(), "seller": req.seller, "baskets": row.baskets,
            "total": f"{row.total_cents / 100:.2f}", "currency": row.currency,
            "replaced": replaced}
