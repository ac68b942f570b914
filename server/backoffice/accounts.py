"""The customer page's account part: balance, limit, terms, payments, statements (PDF).

Desk staff and above see it and download statements; managers open or change an account,
close it and record a payment (the till records payments through the API).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DecimalField, HiddenField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.validators import DataRequired, NumberRange, Optional

from server.accounts import service, statements
from server.accounts.models import Statement
from server.accounts.schemas import PaymentIn
from server.api.problems import Problem
from server.backoffice.blueprint import (
    PROBLEMS,
    SCREEN,
    T,
    back_to_customer,
    bp,
    customer_section,
    principal,
)
from server.backoffice.security import roles_required
from server.customers.models import Customer
from server.db import main_session, vault_session
from server.loyalty import programmes
from server.privacy import service as privacy

log = logging.getLogger(__name__)
AT = T + "accounts/"
PROBLEMS.update({
    "no-account": _l("This customer has no account."),
    "event-id-conflict": _l("This form was already sent."),
})
METHOD_NAMES = {"cash": _l("cash"), "card": _l("bank card"), "transfer": _l("bank transfer"),
                "cheque": _l("cheque")}


class AccountForm(FlaskForm):
    credit_limit = DecimalField(_l("Credit limit"), places=2,
                                validators=[DataRequired(), NumberRange(min=0, max=10_000_000)])
    terms_days = IntegerField(_l("Payment terms (days)"), default=30,
                              validators=[NumberRange(min=0, max=365)])


class PaymentForm(FlaskForm):
    event_id = HiddenField()
    amount = DecimalField(_l("Amount paid"), places=2,
                          validators=[DataRequired(), NumberRange(min=0.01, max=10_000_000)])
    method = SelectField(_l("How"), choices=[Choice(k, v) for k, v in METHOD_NAMES.items()])
    reference = StringField(_l("Reference (cheque number, transfer)"), validators=[Optional()])


class CloseForm(FlaskForm):
    pass


def _load(main, _vault, who, customer_id: str) -> dict:
    account = service.get(main, customer_id)
    rows = main.scalars(select(Statement).where(Statement.customer_id == customer_id)
                        .order_by(Statement.month.desc()).limit(24)).all()
    form = AccountForm(formdata=None)
    payment = PaymentForm(formdata=None)
    payment.event_id.data = str(uuid.uuid4())
    if account is not None:
        form.credit_limit.data = account.credit_limit_cents / 100
        form.terms_days.data = account.terms_days
    customer = main.get(Customer, customer_id)
    return {
        "account": account,
        "balance": service.money(service.balance(main, customer_id)) if account else None,
        "limit": service.money(account.credit_limit_cents) if account else None,
        "punctuality": service.punctuality(main, customer_id) if account else None,
        "statements": [(s, service.money(s.closing_cents),
                        service.statement_on_time(main, s.id)) for s in rows],
        "payments": [(p, service.money(p.amount_cents)) for p in
                     service.payments(main, customer_id, 10)] if account else [],
        "can_manage": who.role in service.MANAGE_ROLES and customer is not None
        and customer.erased_at is None,
        "form": form, "payment": payment, "close": CloseForm(formdata=None),
        "method_names": METHOD_NAMES, "currency": programmes.current(main)[1].currency,
    }


customer_section("trade-account", AT + "_customer.html", service.READ_ROLES, _load)


@bp.post("/customers/<customer_id>/account")
@roles_required(*service.MANAGE_ROLES)
def open_account(customer_id: str):
    """Open an account, or change its credit limit and payment terms."""
    form = AccountForm()
    if not form.validate():
        flash(_("Give a credit limit of 0 or more and terms of 0 to 365 days."), "error")
        return back_to_customer(customer_id)
    service.open_account(main_session(), principal().actor, customer_id,
                         credit_limit_cents=int(form.credit_limit.data * 100),
                         terms_days=form.terms_days.data)
    flash(_("Account saved."), "ok")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/account/close")
@roles_required(*service.MANAGE_ROLES)
def close_account(customer_id: str):
    """No more purchases on account; what is owed stays owed."""
    if not CloseForm().validate():
        raise Problem("validation-error")
    service.close_account(main_session(), customer_id)
    flash(_("Account closed: no more purchases on account."), "ok")
    return back_to_customer(customer_id)


@bp.post("/customers/<customer_id>/account/payments")
@roles_required(*service.MANAGE_ROLES)
def record_payment(customer_id: str):
    """A payment made at the desk (cash, cheque) or received by transfer."""
    form = PaymentForm()
    if not form.validate():
        flash(_("Give the amount paid."), "error")
        return back_to_customer(customer_id)
    try:
        req = PaymentIn(event_id=form.event_id.data, amount=form.amount.data,
                        method=form.method.data, reference=form.reference.data or None)
    except ValueError:
        raise Problem("validation-error") from None
    result, _fresh = service.record_payment(main_session(), principal(), customer_id, req)
    flash(_("Payment of %(amount)s recorded; balance due %(balance)s.",
            amount=result["amount"], balance=result["balance"]), "ok")
    return back_to_customer(customer_id)


@bp.get("/customers/<customer_id>/statements/<int:statement_id>.pdf")
@roles_required(*service.READ_ROLES)
def statement_pdf(customer_id: str, statement_id: int):
    """The statement as sent, in the customer's language, with the holder's name (audited)."""
    main = main_session()
    statement = main.get(Statement, statement_id)
    if statement is None or statement.customer_id != customer_id:
        raise Problem("not-found")
    customer = main.get(Customer, customer_id)
    holder = ""
    if customer.erased_at is None:
        personal = privacy.read(main, vault_session(), principal(), customer_id,
                                view=SCREEN + ":statement")
        holder = statements.holder_name(personal)
    pdf = statements.pdf_in_language(statement, holder)
    name = f"statement-{statement.month}-{customer_id}.pdf"
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/statements/stuck")
@roles_required(*service.MANAGE_ROLES)
def statements_stuck():
    """Statements claimed by a run that never said whether they left, to release."""
    from server.backoffice.campaigns import stuck_minutes

    minutes = stuck_minutes(request.args.get("minutes"))
    rows = statements.stuck(main_session(), timedelta(minutes=minutes))
    return render_template(AT + "stuck.html", rows=rows, minutes=minutes)


@bp.post("/statements/stuck")
@roles_required(*service.MANAGE_ROLES)
def release_statements_stuck():
    """Send again with the next run, or failed for good; audited (``statement.release``)."""
    from server.backoffice.campaigns import chosen_ids, stuck_minutes

    minutes = stuck_minutes(request.form.get("minutes"))
    to = request.form.get("to")
    if to not in statements.RELEASE_TO:
        flash(_("Choose whether to send them again or to mark them failed."), "error")
        return redirect(url_for(".statements_stuck", minutes=minutes), 303)
    released = statements.release(main_session(), current_user.principal.actor,
                                  "backoffice:statements",
                                  chosen_ids(request.form.getlist("statement")), to,
                                  timedelta(minutes=minutes))
    if to == "pending":
        flash(ngettext("%(num)d statement will be sent by the next run.",
                       "%(num)d statements will be sent by the next run.", len(released)), "ok")
    else:
        flash(ngettext("%(num)d statement marked failed.", "%(num)d statements marked failed.",
                       len(released)), "ok")
    return redirect(url_for(".statements_stuck", minutes=minutes), 303)
