"""Reports in the back office, for managers and administrators: best sellers, visits per
store, habits across stores, seller indicators. Each page is a GET form (dates, period,
store), a chart drawn on the server (``server.reports.charts``) and tables, each downloadable
as CSV (the same ``Table`` object: ``?csv=<table>``).

The figures come from ``server.reports.service`` (SQL only); this module shapes them.
"""

from __future__ import annotations

import logging
from datetime import date

from flask import Response, redirect, render_template, request, url_for
from flask_babel import format_currency, format_decimal, ngettext, pgettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import BooleanField, DateField, SelectField
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.validators import InputRequired

from server.backoffice.blueprint import T, bp, nav
from server.backoffice.security import roles_required
from server.db import main_session, utcnow
from server.reports import charts, service
from server.reports.tables import Column, Table
from server.segments import service as segments

log = logging.getLogger(__name__)
TR = T + "reports/"
REPORT_ROLES = ("manager", "admin")
PAGES = (("backoffice.report_best_sellers", _l("Best sellers")),
         ("backoffice.report_visits", _l("Visits")),
         ("backoffice.report_habits", _l("Habits across stores")),
         ("backoffice.report_sellers", _l("Sellers and stores")))
nav("backoffice.reports", _l("Reports"), REPORT_ROLES,
    also=tuple(endpoint for endpoint, _label in PAGES), order=47)

PERIOD_NAMES = {"day": _l("day"), "week": _l("week"), "month": _l("month"),
                "season": _l("season"), "year": _l("year")}
SEASONS = {12: _l("Winter"), 3: _l("Spring"), 6: _l("Summer"), 9: _l("Autumn")}
MAX_DAYS = 366 * 5  # a longer range is refused: it would be a big query for little insight
MAX_DAILY = 92  # by day, a quarter at most: more would not fit on a chart


# --------------------------------------------------------------------------- the form


class ReportForm(FlaskForm):
    """The dates, period and store of a report: a GET form, its values sit in the URL."""

    class Meta:
        csrf = False

    # "From" and "To" are the report's dates here, and "To" a campaign's recipients
    # elsewhere: their labels get a message context, set per request (pgettext is what the
    # extraction knows)
    start = DateField("From", validators=[InputRequired(_l("This is required."))])
    end = DateField("To", validators=[InputRequired(_l("This is required."))])
    period = SelectField(_l("By"), default="month",
                         choices=[Choice(k, v) for k, v in PERIOD_NAMES.items()])
    store = SelectField(_l("Store"), default="")
    by_store = BooleanField(_l("Each store apart"))
    segment = SelectField(_l("Segment"), default="")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start.label.text = pgettext("start date", "From")
        self.end.label.text = pgettext("end date", "To")

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        days = (self.end.data - self.start.data).days + 1
        if days < 1:
            self.end.errors.append(_("The end is before the start."))
        elif days > MAX_DAYS:
            self.end.errors.append(_("At most five years at once."))
        elif self.period.data == "day" and days > MAX_DAILY:
            self.period.errors.append(ngettext("By day, at most %(num)d day at once.",
                                                "By day, at most %(num)d days at once.", MAX_DAILY))
        return not (self.end.errors or self.period.errors)


def _form(codes: dict[int, str]) -> ReportForm:
    """The form from the URL; what it leaves out is the last 12 months by month."""
    today = service.today(main_session())
    year, month0 = divmod(today.year * 12 + today.month - 1 - 11, 12)
    values = {"start": date(year, month0 + 1, 1).isoformat(), "end": today.isoformat(),
              "period": "month", **request.args.to_dict()}
    values.pop("csv", None)
    form = ReportForm(MultiDict(values))
    form.store.choices = [Choice("", _l("all"))] + [Choice(str(i), c) for i, c in codes.items()]
    form.segment.choices = [Choice("", _l("every customer"))] + [
        Choice(str(s.id), s.name) for s in segments.saved(main_session())]
    form.validate()
    return form


def _store_id(form: ReportForm) -> int | None:
    value = form.store.data or ""
    return int(value) if value.isdigit() else None


def _ok(form: ReportForm) -> bool:
    return not any(f.errors for f in form)


# --------------------------------------------------------------------------- shaping


def period_label(first_day, period: str | None) -> str:
    """A period as people name it: 2026-03-14, 2026-W11, 2026-03, Winter 2025-26, 2026."""
    day = date.fromisoformat(service.period_name(first_day))
    if period == "week":
        year, week, _weekday = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day:%Y-%m}"
    if period == "season":
        name = SEASONS.get(day.month, "")
        return f"{name} {day.year}-{(day.year + 1) % 100:02d}" if day.month == 12 else \
            f"{name} {day.year}"
    if period == "year":
        return str(day.year)
    return day.isoformat()


def _money(cents: float) -> str:
    return format_currency(cents / 100, "EUR")


def _csv(table: Table, name: str, form: ReportForm) -> Response:
    filename = f"{name}-{form.start.data.isoformat()}-{form.end.data.isoformat()}.csv"
    return Response(table.csv(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


def _page(template: str, form: ReportForm, tables: dict[str, tuple[object, Table]], **kw):
    """The page, or one of its tables as CSV when ``?csv=<key>`` asks for it."""
    wanted = request.args.get("csv")
    if wanted and _ok(form) and wanted in tables:
        return _csv(tables[wanted][1], wanted, form)
    query = {k: v for k, v in request.args.items(multi=False) if k != "csv"}
    return render_template(TR + template, form=form, tables=tables, pages=PAGES, query=query,
                           ok=_ok(form), **kw), 200 if _ok(form) else 422


def _customers(form: ReportForm):
    """The chosen saved segment's customers (a Select of ids), or None for every customer."""
    value = form.segment.data or ""
    if not value.isdigit():
        return None
    main = main_session()
    return segments.members(main, segments.definition_of(segments.get(main, int(value))),
                            utcnow())


# --------------------------------------------------------------------------- pages


@bp.get("/reports")
@roles_required(*REPORT_ROLES)
def reports():
    """The section's first page."""
    return redirect(url_for(".report_best_sellers"))


@bp.get("/reports/best-sellers")
@roles_required(*REPORT_ROLES)
def report_best_sellers():
    """The top SKUs of each period by net sales, refunds deducted; the top of the whole range
    as a bar chart."""
    main = main_session()
    codes = service.store_codes(main)
    form = _form(codes)
    columns = [Column("period", _l("Period")), Column("rank", _l("Rank"), "int"),
               Column("sku", _l("SKU")), Column("name", _l("Name")),
               Column("category", _l("Category")), Column("quantity", _l("Quantity"), "quantity"),
               Column("net", _l("Net sales"), "money"),
               Column("customers", _l("Customers"), "int")]
    by_store = bool(form.by_store.data)
    if by_store:
        columns.insert(1, Column("store", _l("Store")))
    table, chart = Table(columns), None
    if _ok(form):
        s = service.span(main, form.start.data, form.end.data)
        kw = {"store_id": _store_id(form), "customers": _customers(form)}
        for r in service.best_sellers(main, s, form.period.data, by_store=by_store, **kw):
            row = [period_label(r.period, form.period.data), r.rank, r.sku, r.name, r.category,
                   r.quantity_milli, r.net_cents, r.customers]
            if by_store:
                row.insert(1, codes.get(r.store_id, ""))
            table.rows.append(row)
        overall = service.best_sellers(main, s, None, **kw)
        if overall:
            chart = charts.bar_chart(
                [f"{r.sku} · {r.name}" for r in overall], [r.net_cents for r in overall],
                title=ngettext("Top %(num)d by net sales, %(start)s to %(end)s",
                               "Top %(num)d by net sales, %(start)s to %(end)s", service.TOP,
                               start=s.start.isoformat(), end=s.end.isoformat()), fmt=_money)
    return _page("best_sellers.html", form,
                 {"best-sellers": (_l("Best sellers by period"), table)}, chart=chart)


@bp.get("/reports/visits")
@roles_required(*REPORT_ROLES)
def report_visits():
    """Visits per store and period, as a line per store and a table."""
    main = main_session()
    codes = service.store_codes(main)
    form = _form(codes)
    table = Table([Column("period", _l("Period")), Column("store", _l("Store")),
                   Column("visits", _l("Visits"), "int"),
                   Column("customers", _l("Customers"), "int"),
                   Column("taps", _l("Card taps"), "int")])
    chart = None
    if _ok(form):
        s = service.span(main, form.start.data, form.end.data)
        rows = service.visits(main, s, form.period.data, store_id=_store_id(form),
                              customers=_customers(form))
        by_store: dict[str, dict[str, int]] = {}
        for r in rows:
            label = period_label(r.period, form.period.data)
            table.rows.append([label, r.store_code, r.visits, r.customers, r.taps])
            by_store.setdefault(r.store_code, {})[label] = r.visits
        if rows:  # every period on the axis, those without visits at 0
            axis = [period_label(p, form.period.data)
                    for p in service.periods(s, form.period.data)]
            chart = charts.line_chart(
                axis, {code: [v.get(p, 0) for p in axis] for code, v in by_store.items()},
                title=_("Visits per store"), fmt=lambda v: format_decimal(round(v)),
                integer=True)
    return _page("visits.html", form, {"visits": (_l("Visits per store"), table)}, chart=chart)


@bp.get("/reports/habits")
@roles_required(*REPORT_ROLES)
def report_habits():
    """A matrix: customers of each home store (rows) by the store they bought in (columns)."""
    main = main_session()
    codes = service.store_codes(main)
    form = _form(codes)
    columns = [Column("home", _l("Home store"))]
    for code in codes.values():
        columns += [Column(f"{code}-customers", _l("%(store)s: customers", store=code), "int"),
                    Column(f"{code}-net", _l("%(store)s: net sales", store=code), "money")]
    table = Table(columns)
    if _ok(form):
        s = service.span(main, form.start.data, form.end.data)
        cells = {(r.home_store_id, r.store_id): r
                 for r in service.habits(main, s, customers=_customers(form))}
        homes = sorted({home for home, _store in cells}, key=lambda i: codes.get(i, ""))
        for home in homes:
            row = [codes.get(home, "")]
            for store in codes:
                cell = cells.get((home, store))
                row += [cell.customers if cell else 0, cell.net_cents if cell else 0]
            table.rows.append(row)
    return _page("habits.html", form,
                 {"habits": (_l("Home store by store bought in"), table)}, codes=codes)


@bp.get("/reports/sellers")
@roles_required(*REPORT_ROLES)
def report_sellers():
    """Per store (enrolments, sales, redemptions) and per seller (sales, baskets, rewards)."""
    main = main_session()
    codes = service.store_codes(main)
    form = _form(codes)
    per_store = Table([Column("store", _l("Store")),
                       Column("enrolments", _l("Enrolments"), "int"),
                       Column("baskets", _l("Baskets"), "int"),
                       Column("net", _l("Net sales"), "money"),
                       Column("average", _l("Average basket"), "money"),
                       Column("redemptions", _l("Rewards redeemed"), "int"),
                       Column("anonymous", _l("Sales without a card"), "money"),
                       Column("share", _l("Card holders' share (%)"), "percent")])
    per_seller = Table([Column("store", _l("Store")), Column("seller", _l("Seller")),
                        Column("baskets", _l("Baskets"), "int"),
                        Column("net", _l("Net sales"), "money"),
                        Column("average", _l("Average basket"), "money"),
                        Column("customers", _l("Customers"), "int"),
                        Column("redemptions", _l("Rewards used"), "int"),
                        Column("share", _l("Card holders' share (%)"), "percent")])
    chart = None
    if _ok(form):
        s = service.span(main, form.start.data, form.end.data)
        kw = {"store_id": _store_id(form), "customers": _customers(form)}
        for r in service.stores(main, s, **kw):
            per_store.rows.append([r.store_code, r.enrolments, r.baskets, r.net_cents,
                                   r.average_cents, r.redemptions,
                                   r.anonymous_cents if r.card_share is not None else None,
                                   r.card_share])
        rows = service.sellers(main, s, **kw)
        for r in rows:
            per_seller.rows.append([r.store_code, r.seller or _("(not given by the till)"),
                                    r.baskets, r.net_cents, r.average_cents, r.customers,
                                    r.redemptions, r.card_share])
        if rows:
            top = rows if len(rows) <= 15 else sorted(rows, key=lambda r: -r.net_cents)[:15]
            chart = charts.bar_chart(
                [f"{r.store_code} · {r.seller or '—'}" for r in top],
                [r.net_cents for r in top], title=_("Net sales per seller"), fmt=_money)
    return _page("sellers.html", form, {"stores": (_l("Stores"), per_store),
                                        "sellers": (_l("Sellers"), per_seller)}, chart=chart)
