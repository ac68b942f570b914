"""Segments in the back office: the saved list, a form to define one (with a count before
saving), the CSV export and deletion. For managers and admins.

The export holds no personal data unless a purpose is chosen (offers by email or by text
message): then only the members who granted it are listed, and their name and that contact
detail are read through ``server.privacy.service.contacts`` (one audit entry for the list).
"""

from __future__ import annotations

import csv
import io
import logging

from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from pydantic import ValidationError
from sqlalchemy import select
from wtforms import BooleanField, IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from server.backoffice.blueprint import PROBLEMS, PURPOSES, T, bp, nav, principal
from server.backoffice.security import roles_required
from server.db import main_session, utcnow, vault_session
from server.loyalty import programmes
from server.privacy.service import LIST_ROLES, PURPOSE_FIELDS, contacts
from server.segments import service
from server.segments.models import NAME_MAX
from server.segments.schemas import AGE_BANDS, Definition
from server.stores.models import Store
from server.value import service as value_service

log = logging.getLogger(__name__)
ST = T + "segments/"
VIEW = "backoffice:segments"
SEGMENT_ROLES = LIST_ROLES
nav("backoffice.segments", _l("Segments"), SEGMENT_ROLES,
    also=("backoffice.new_segment", "backoffice.segment"), order=46)
PROBLEMS.update({
    "segment-not-found": _l("There is no segment with this number."),
    "segment-name-taken": _l("Another segment already has this name."),
})

SEX_NAMES = {"female": _l("female"), "male": _l("male"), "other": _l("other")}
SEASON_NAMES = {"winter": _l("winter (Dec–Feb)"), "spring": _l("spring (Mar–May)"),
                "summer": _l("summer (Jun–Aug)"), "autumn": _l("autumn (Sep–Nov)")}
MONTH_NAMES = (_l("January"), _l("February"), _l("March"), _l("April"), _l("May"),
               _l("June"), _l("July"), _l("August"), _l("September"), _l("October"),
               _l("November"), _l("December"))
WEEKDAY_NAMES = (_l("Monday"), _l("Tuesday"), _l("Wednesday"), _l("Thursday"), _l("Friday"),
                 _l("Saturday"), _l("Sunday"))
BAND_NAMES = {"premium": _l("premium"), "high": _l("high"), "medium": _l("medium"),
              "low": _l("low"), "inactive": _l("inactive (no purchase in the window)")}
CONSENT_NAMES = {p: PURPOSES[p] for p in ("marketing_email", "marketing_sms", "profiling")}
EXPORT_PURPOSES = {"": _l("Analysis: no personal data"),
                   "marketing_email": _l("Offers by email: name and email address"),
                   "marketing_sms": _l("Offers by text message: name and phone number")}
LIST_FIELDS = ("sexes", "age_bands", "home_stores", "regions", "months", "seasons", "weekdays",
               "tiers", "bands", "consents")


def _choices(pairs) -> list[Choice]:
    return [Choice(value, label) for value, label in pairs]


class Checkboxes(SelectMultipleField):
    """Several values, each a box; none ticked means "any"."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def pre_validate(self, form) -> None:  # the schema checks the values
        pass


class SegmentForm(FlaskForm):
    name = StringField(_l("Name"), validators=[
        DataRequired(_l("This is required.")),
        Length(max=NAME_MAX, message=_l("At most %(max)d characters."))])
    sexes = Checkboxes(_l("Sex"), choices=_choices(SEX_NAMES.items()),
                       description=_l("Only customers who allow profiling."))
    age_bands = Checkboxes(_l("Age band"), choices=_choices((b, b) for b in AGE_BANDS),
                           description=_l("Only customers who allow profiling."))
    home_stores = Checkboxes(_l("Home store"))
    regions = Checkboxes(_l("Region of the home store"))
    months = Checkboxes(_l("Bought in the month of"), coerce=int,
                        choices=_choices((i + 1, m) for i, m in enumerate(MONTH_NAMES)))
    seasons = Checkboxes(_l("Bought in the season"), choices=_choices(SEASON_NAMES.items()))
    weekdays = Checkboxes(_l("Bought on"), coerce=int, choices=_choices(enumerate(WEEKDAY_NAMES)))
    categories = StringField(_l("Bought in the categories"), validators=[Optional()],
                             description=_l("Product categories, separated by commas."))
    within_months = IntegerField(_l("Bought within the last (months)"), validators=[
        Optional(), NumberRange(1, 120)], description=_l("Empty: any time."))
    tiers = Checkboxes(_l("Tier"))
    bands = Checkboxes(_l("Value band"), choices=_choices(BAND_NAMES.items()))
    score_min = IntegerField(_l("Value score from"), validators=[Optional(), NumberRange(0, 100)])
    score_max = IntegerField(_l("Value score up to"), validators=[Optional(), NumberRange(0, 100)])
    consents = Checkboxes(_l("Has allowed"), choices=_choices(CONSENT_NAMES.items()))

    def fill_choices(self) -> None:
        main = main_session()
        self.home_stores.choices = _choices((c, f"{c} — {n}") for c, n in main.execute(
            select(Store.code, Store.name).order_by(Store.code)))
        self.regions.choices = _choices((r, r) for r in main.scalars(
            select(Store.region).distinct().where(Store.region.is_not(None))
            .order_by(Store.region)))
        self.tiers.choices = _choices((t.code, t.code) for t in programmes.current(main)[1].tiers)

    def fill(self, definition: Definition) -> None:
        for name in LIST_FIELDS:
            self[name].data = list(getattr(definition, name))
        self.categories.data = ", ".join(definition.categories)
        self.within_months.data = definition.within_months
        self.score_min.data = definition.score_min
        self.score_max.data = definition.score_max

    def definition(self) -> Definition | None:
        """The validated definition, or None with the errors put on the fields."""
        data = {name: self[name].data or [] for name in LIST_FIELDS}
        data["categories"] = [c.strip() for c in (self.categories.data or "").split(",")
                              if c.strip()]
        for name in ("within_months", "score_min", "score_max"):
            data[name] = self[name].data
        try:
            return Definition.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                name = error["loc"][0] if error["loc"] else None
                message = error["msg"].removeprefix("Value error, ")
                target = self[name] if name in self else self.score_max  # noqa: SIM401
                target.errors = [*target.errors, message]
            return None


class ExportForm(FlaskForm):
    purpose = SelectField(_l("What the list is for"), choices=_choices(EXPORT_PURPOSES.items()),
                          default="")
    contacts = BooleanField(_l("Include the name and contact detail"))


def summary(definition: Definition) -> list[tuple[str, str]]:
    """The definition in words: ``(what, values)`` per filter used."""
    form = SegmentForm(formdata=None, meta={"csrf": False})
    names = {**SEX_NAMES, **SEASON_NAMES, **BAND_NAMES, **CONSENT_NAMES}
    out = []
    for field in LIST_FIELDS + ("categories", "within_months", "score_min", "score_max"):
        value = getattr(definition, field)
        if value in ((), None):
            continue
        if field == "months":
            text = ", ".join(str(MONTH_NAMES[m - 1]) for m in value)
        elif field == "weekdays":
            text = ", ".join(str(WEEKDAY_NAMES[d]) for d in value)
        elif isinstance(value, tuple):
            text = ", ".join(str(names.get(v, v)) for v in value)
        else:
            text = str(value)
        out.append((str(form[field].label.text), text))
    if definition.uses_profile and "profiling" not in definition.consents:
        out.append((_("Has allowed"), str(CONSENT_NAMES["profiling"])))
    return out


def _cell(value) -> str:
    """Text typed by people, safe in a spreadsheet: a leading = + - @ would start a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --------------------------------------------------------------------------- pages


@bp.get("/segments")
@roles_required(*SEGMENT_ROLES)
def segments():
    rows = [(s, summary(service.definition_of(s))) for s in service.saved(main_session())]
    return render_template(ST + "list.html", rows=rows)


def _form_page(form: SegmentForm, segment=None, counted: int | None = None, status: int = 200):
    export = ExportForm(formdata=None)
    return render_template(ST + "edit.html", form=form, segment=segment, counted=counted,
                           export=export, purpose_fields=PURPOSE_FIELDS,
                           snapshot=value_service.snapshot(main_session())), status


def _submit(form: SegmentForm, segment_id: int | None):
    """Count (``action=count``: no name needed) or save the form."""
    counting = request.form.get("action") == "count"
    form.validate()
    if counting:
        form.name.errors = []
    definition = None if any(f.errors for f in form) else form.definition()
    segment = service.get(main_session(), segment_id) if segment_id else None
    if definition is None:
        return _form_page(form, segment, status=422)
    if counting:
        return _form_page(form, segment, counted=service.count(main_session(), definition))
    segment = service.save(main_session(), form.name.data, definition, principal().actor,
                           segment_id)
    flash(_("Segment saved: %(name)s.", name=segment.name), "ok")
    return redirect(url_for(".segment", segment_id=segment.id), 303)


@bp.route("/segments/new", methods=["GET", "POST"])
@roles_required(*SEGMENT_ROLES)
def new_segment():
    form = SegmentForm() if request.method == "POST" else SegmentForm(formdata=None)
    form.fill_choices()
    if request.method == "POST":
        return _submit(form, None)
    return _form_page(form)


@bp.route("/segments/<int:segment_id>", methods=["GET", "POST"])
@roles_required(*SEGMENT_ROLES)
def segment(segment_id: int):
    """A saved segment: its definition to change, how many customers, the export."""
    row = service.get(main_session(), segment_id)
    if request.method == "POST":
        form = SegmentForm()
        form.fill_choices()
        return _submit(form, segment_id)
    form = SegmentForm(formdata=None)
    form.fill_choices()
    form.name.data = row.name
    definition = service.definition_of(row)
    form.fill(definition)
    return _form_page(form, row, counted=service.count(main_session(), definition))


@bp.post("/segments/<int:segment_id>/delete")
@roles_required(*SEGMENT_ROLES)
def delete_segment(segment_id: int):
    name = service.get(main_session(), segment_id).name
    service.delete(main_session(), segment_id, principal().actor)
    flash(_("Segment deleted: %(name)s.", name=name), "ok")
    return redirect(url_for(".segments"), 303)


@bp.post("/segments/<int:segment_id>/export.csv")
@roles_required(*SEGMENT_ROLES)
def export_segment(segment_id: int):
    """The members as CSV; with a purpose, only those who allowed it, with their contact."""
    row = service.get(main_session(), segment_id)
    form = ExportForm()
    purpose = form.purpose.data if form.purpose.data in PURPOSE_FIELDS else None
    rows = service.export_rows(main_session(), service.definition_of(row), utcnow(), purpose)
    header = ["customer_id", "tier", "points", "value_score", "band", "home_store"]
    personal: dict[str, dict] = {}
    if purpose and form.contacts.data:
        personal = contacts(main_session(), vault_session(), principal(),
                            [r.customer_id for r in rows], purpose, view=VIEW,
                            detail={"segment": row.id})
        header += ["language", "first_name", "last_name", *PURPOSE_FIELDS[purpose]]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for r in rows:
        line = [r.customer_id, r.tier, r.points, "" if r.score is None else r.score, r.band,
                r.home_store]
        if purpose and form.contacts.data:
            if r.customer_id not in personal:
                continue  # the consent changed between the two reads: left out
            data = personal[r.customer_id]
            # names are typed by people; email and phone were checked when they were stored
            line += [r.language, _cell(data.get("first_name")), _cell(data.get("last_name")),
                     *(data.get(f) or "" for f in header[9:])]
        writer.writerow(line)
    log.info("segment %s exported by %s: %d rows, purpose %s, contacts %s", row.id,
             principal().actor, len(rows), purpose, bool(personal))
    filename = f"segment-{row.id}{'-' + purpose if purpose else ''}.csv"
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})
