"""The value ranking: the best customers by value score, for managers (no personal data).

The page reads the snapshot (``server.value.service.refresh``, nightly by a timer): one index
range for the ranking, the band counts from the snapshot's row. Before the first refresh it
says so, and a manager may run the refresh from here (audited).
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from server.backoffice.blueprint import T, bp, nav, principal
from server.backoffice.security import roles_required
from server.db import main_session
from server.loyalty import programmes
from server.privacy import audit
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
    version, programme = programmes.current(main)
    found = service.snapshot(main)
    rows = service.ranking(main, limit=limit, band=band or None) if found else []
    counts = service.band_counts(found)
    return render_template(T + "value/ranking.html", rows=rows, counts=counts, band=band,
                           limit=limit, limits=LIMITS, rules=programme.value,
                           currency=programme.currency, bands=BANDS, snapshot=found,
                           version=version, active=found.active if found else 0)


@bp.post("/value/refresh")
@roles_required(*VALUE_ROLES)
def value_refresh():
    """Compute the snapshot now (what the nightly timer does); audited."""
    main = main_session()
    who = principal()
    found = service.refresh(main, actor=who.actor)
    audit.record(main, who.actor, "value.refresh", None, view="backoffice:value",
                 detail={"active": found.active, "programme_version": found.programme_version})
    flash(ngettext("Value scores computed: %(num)d active customer.",
                   "Value scores computed: %(num)d active customers.", found.active), "ok")
    return redirect(url_for("backoffice.value"), 303)
