"""The value ranking: the best customers by value score, for managers (no personal data)."""

from __future__ import annotations

import logging

from flask import render_template, request
from flask_babel import lazy_gettext as _l

from server.backoffice.blueprint import T, bp, nav
from server.backoffice.security import roles_required
from server.db import main_session, utcnow
from server.loyalty import programmes
from server.privacy.service import ERASE_ROLES
from server.value import service
from server.value.service import BANDS

log = logging.getLogger(__name__)
# managers and admins: the ranking is a management tool (the file shows each score to desk)
VALUE_ROLES = ERASE_ROLES
LIMITS = (20, 50, 100, 500)
nav("backoffice.value", _l("Value"), VALUE_ROLES, order=45)


@bp.get("/value")
@roles_required(*VALUE_ROLES)
def value():
    """The top N active customers with score and band, optionally of one band."""
    band = request.args.get("band", "")
    band = band if band in BANDS and band != "inactive" else ""
    limit = request.args.get("limit", "", type=int)
    limit = limit if limit in LIMITS else LIMITS[1]
    main = main_session()
    programme = programmes.current(main)[1]
    now = utcnow()
    rows = service.ranking(main, programme, now, limit=limit, band=band or None)
    counts = service.band_counts(main, programme, now)
    return render_template(T + "value/ranking.html", rows=rows, counts=counts, band=band,
                           limit=limit, limits=LIMITS, rules=programme.value,
                           currency=programme.currency, bands=BANDS,
                           active=sum(n for b, n in counts.items() if b != "inactive"))
