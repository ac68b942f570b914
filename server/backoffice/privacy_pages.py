"""The audit log and the retention list."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import (
    current_app,
    render_template,
    request,
)
from flask_babel import lazy_gettext as _l

from server.backoffice import queries
from server.backoffice.blueprint import (
    T,
    bp,
    nav,
)
from server.backoffice.forms import (
    AuditFilterForm,
    parse_customer_id,
)
from server.backoffice.security import (
    roles_required,
)
from server.db import main_session, utcnow
from server.privacy import audit, retention
from server.privacy.service import AUDIT_ROLES, ERASE_ROLES

log = logging.getLogger(__name__)
nav("backoffice.retention_due", _l("Retention"), ERASE_ROLES, order=30)
nav("backoffice.audit_log", _l("Audit log"), AUDIT_ROLES, order=40)

# --------------------------------------------------------------------------- audit, retention


@bp.get("/audit")
@roles_required(*AUDIT_ROLES)
def audit_log():
    """The audit log, newest first, with the chain checked from its first entry."""
    form = AuditFilterForm(request.args)
    typed = (form.customer_id.data or "").strip()
    customer_id = (parse_customer_id(typed) or typed.upper()) if typed else None
    main = main_session()
    report = audit.verify(main)
    page = queries.audit_page(main, customer_id, request.args.get("before", type=int))
    return render_template(T + "audit.html", form=form, report=report, page=page,
                           customer_id=customer_id,
                           broken=queries.audit_entry(main, report.broken_at))


@bp.get("/retention")
@roles_required(*ERASE_ROLES)
def retention_due():
    """Customers inactive for longer than the retention period, and where their notice is."""
    config = current_app.config
    notice = timedelta(days=int(config["RETENTION_NOTICE_DAYS"]))
    rows = retention.due(main_session(), utcnow(), int(config["RETENTION_INACTIVE_DAYS"]),
                         limit=500)
    for row in rows:
        row["erase_on"] = row["notice_at"] + notice if row["notice_at"] else None
    return render_template(T + "retention.html", rows=rows, limit=500,
                           inactive_days=config["RETENTION_INACTIVE_DAYS"],
                           notice_days=config["RETENTION_NOTICE_DAYS"])

