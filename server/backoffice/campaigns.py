"""Campaigns in the back office (managers and admins): the list, a new campaign with its
templates per language and a preview, sending with a confirmation that says how many, the
send log; triggered campaigns are switched on and off here.

The target is every consenting customer, or those of a saved segment (chosen on the page
that asks for confirmation); the campaign keeps the segment's id and its definition as sent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice as Choice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from server.backoffice.blueprint import T, bp, nav
from server.backoffice.security import roles_required
from server.campaigns import service, templating
from server.campaigns.models import Campaign, CampaignMessage
from server.db import main_session, utcnow
from server.segments import service as segments

log = logging.getLogger(__name__)
CT = T + "campaigns/"
CAMPAIGN_ROLES = ("manager", "admin")
nav("backoffice.campaigns", _l("Campaigns"), CAMPAIGN_ROLES,
    also=("backoffice.new_campaign", "backoffice.campaign", "backoffice.campaign_log",
          "backoffice.confirm_campaign", "backoffice.campaigns_stuck"), order=48)

CHANNEL_NAMES = {"email": _l("Email"), "sms": _l("Text message")}
TRIGGER_NAMES = {"": _l("One-off: sent once, when you send it"),
                 "welcome": _l("Welcome: after enrolment"),
                 "birthday": _l("Birthday"),
                 "points_expiring": _l("Points expiring within N days"),
                 "no_visit": _l("No visit for N days")}
STATUS_NAMES = {"draft": _l("draft"), "queued": _l("sending or sent"), "active": _l("active"),
                "paused": _l("paused")}
MESSAGE_STATUS_NAMES = {"queued": _l("queued"), "sending": _l("being sent (or interrupted)"),
                        "sent": _l("sent"), "failed": _l("failed"), "skipped": _l("skipped")}
LOG_LIMIT = 500
STUCK_MINUTES = 30  # a claim older than this is not a sender at work any more


class CampaignForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(_l("This is required.")),
                                               Length(max=120)])
    channel = SelectField(_l("Channel"), choices=[Choice(k, v) for k, v in CHANNEL_NAMES.items()])
    trigger = SelectField(_l("When"), choices=[Choice(k, v) for k, v in TRIGGER_NAMES.items()],
                          default="")
    trigger_days = IntegerField(_l("N (days)"), validators=[Optional(), NumberRange(1, 3650)],
                                description=_l("Welcome: enrolled within N days (2 if empty). "
                                               "Points expiring: within N days (30). No "
                                               "visit: for N days (60)."))


for _lang in templating.LANGUAGES:
    setattr(CampaignForm, f"{_lang}_subject", StringField(_l("Subject"),
                                                          validators=[Length(max=200)]))
    setattr(CampaignForm, f"{_lang}_text", TextAreaField(_l("Text")))
    setattr(CampaignForm, f"{_lang}_html", TextAreaField(_l("HTML (email, optional)")))


def _templates(form: CampaignForm) -> dict:
    """The languages filled in: an email needs a subject and a text, an SMS a text."""
    out = {}
    for lang in templating.LANGUAGES:
        text = (getattr(form, f"{lang}_text").data or "").strip()
        if not text:
            continue
        if form.channel.data == "email":
            out[lang] = {"subject": (getattr(form, f"{lang}_subject").data or "").strip(),
                         "text": text, "html": (getattr(form, f"{lang}_html").data or "").strip()}
        else:
            out[lang] = {"text": text}
    return out


def _previews(channel: str, templates: dict) -> dict:
    """Each language rendered with sample values; SMS with its length and parts."""
    out = {}
    for lang in templates:
        try:
            _used, parts = templating.render(templates, lang, templating.SAMPLE)
        except Exception as exc:  # a template error: the form shows it instead
            out[lang] = {"error": str(exc)}
            continue
        if channel == "sms":
            parts["sms"] = templating.sms_parts(parts.get("text", ""))
        out[lang] = parts
    return out


@bp.get("/campaigns")
@roles_required(*CAMPAIGN_ROLES)
def campaigns():
    main = main_session()
    counts: dict[int, dict[str, int]] = {}
    for campaign_id, status, n in main.execute(
            select(CampaignMessage.campaign_id, CampaignMessage.status, func.count())
            .group_by(CampaignMessage.campaign_id, CampaignMessage.status)):
        counts.setdefault(campaign_id, {})[status] = n
    rows = main.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(200)).all()
    return render_template(CT + "list.html", rows=rows, counts=counts, **_names())


def _names() -> dict:
    return {"channel_names": CHANNEL_NAMES, "trigger_names": TRIGGER_NAMES,
            "status_names": STATUS_NAMES, "template_languages": templating.LANGUAGES,
            "placeholders": templating.PLACEHOLDERS,
            "message_status_names": MESSAGE_STATUS_NAMES}


@bp.get("/campaigns/new")
@roles_required(*CAMPAIGN_ROLES)
def new_campaign():
    return render_template(CT + "new.html", form=CampaignForm(formdata=None), previews=None,
                           template_errors={}, **_names())


@bp.post("/campaigns/new")
@roles_required(*CAMPAIGN_ROLES)
def create_campaign():
    form = CampaignForm()
    valid = form.validate()
    templates = _templates(form)
    errors = templating.check_all(form.channel.data, templates)
    if request.form.get("action") == "preview" or not valid or errors:
        return render_template(CT + "new.html", form=form, template_errors=errors,
                               previews=_previews(form.channel.data, templates)
                               if not errors else None,
                               **_names()), 200 if request.form.get("action") == "preview" \
            and not errors else 422
    campaign = service.create(main_session(), current_user.principal.actor,
                              name=form.name.data, channel=form.channel.data,
                              templates=templates, trigger=form.trigger.data or None,
                              trigger_days=form.trigger_days.data)
    flash(_("Campaign saved."), "ok")
    return redirect(url_for(".campaign", campaign_id=campaign.id), 303)


def _campaign(campaign_id: int) -> Campaign:
    campaign = main_session().get(Campaign, campaign_id)
    if campaign is None:
        abort(404)
    return campaign


@bp.get("/campaigns/<int:campaign_id>")
@roles_required(*CAMPAIGN_ROLES)
def campaign(campaign_id: int):
    c = _campaign(campaign_id)
    return render_template(CT + "campaign.html", campaign=c,
                           counts=service.log_counts(main_session(), campaign_id),
                           previews=_previews(c.channel, c.templates), **_names())


def _target(value: str | None):
    """The chosen saved segment (``Segment``, its customers as a Select), or (None, None)."""
    if not (value or "").isdigit():
        return None, None
    main = main_session()
    segment = segments.get(main, int(value))  # Problem segment-not-found: the 404 page
    return segment, segments.members(main, segments.definition_of(segment), utcnow())


@bp.get("/campaigns/<int:campaign_id>/send")
@roles_required(*CAMPAIGN_ROLES)
def confirm_campaign(campaign_id: int):
    """To whom (every customer, or a saved segment) and how many, before anything is sent."""
    c = _campaign(campaign_id)
    if c.trigger or c.status != "draft":
        return redirect(url_for(".campaign", campaign_id=campaign_id), 303)
    segment, target = _target(request.args.get("segment"))
    return render_template(CT + "confirm.html", campaign=c, segment=segment,
                           saved_segments=segments.saved(main_session()),
                           count=service.count_recipients(main_session(), c.channel, target),
                           **_names())


@bp.post("/campaigns/<int:campaign_id>/send")
@roles_required(*CAMPAIGN_ROLES)
def send_campaign(campaign_id: int):
    """Queue the messages; ``flask campaigns send`` (a timer) sends them at the set rate."""
    c = _campaign(campaign_id)
    if c.trigger or c.status != "draft":
        flash(_("This campaign is not a draft: it was queued already."), "error")
        return redirect(url_for(".campaign", campaign_id=campaign_id), 303)
    segment, target = _target(request.form.get("segment"))
    queued = service.queue(main_session(), c, target,
                           segment_id=segment.id if segment else None,
                           definition=segment.definition if segment else None)
    log.info("campaign %s queued by %s: %d messages", c.id, current_user.principal.actor,
             queued)
    flash(ngettext("%(num)d message queued.", "%(num)d messages queued.", queued), "ok")
    return redirect(url_for(".campaign", campaign_id=campaign_id), 303)


@bp.post("/campaigns/<int:campaign_id>/active")
@roles_required(*CAMPAIGN_ROLES)
def campaign_active(campaign_id: int):
    """Switch a triggered campaign on or off."""
    c = _campaign(campaign_id)
    if not c.trigger:
        abort(404)
    c.status = "active" if request.form.get("active") == "1" else "paused"
    flash(_("Switched on.") if c.status == "active" else _("Switched off."), "ok")
    return redirect(url_for(".campaign", campaign_id=campaign_id), 303)


@bp.get("/campaigns/<int:campaign_id>/log")
@roles_required(*CAMPAIGN_ROLES)
def campaign_log(campaign_id: int):
    c = _campaign(campaign_id)
    main = main_session()
    rows = main.scalars(select(CampaignMessage).where(CampaignMessage.campaign_id == c.id)
                        .order_by(CampaignMessage.id.desc()).limit(LOG_LIMIT)).all()
    return render_template(CT + "log.html", campaign=c, rows=rows, limit=LOG_LIMIT,
                           counts=service.log_counts(main, c.id), **_names())


def stuck_minutes(value: str | None) -> int:
    """The "older than N minutes" of a stuck-sends page: a whole number from 1, else 30."""
    return int(value) if (value or "").isdigit() and int(value) >= 1 else STUCK_MINUTES


def chosen_ids(values: list[str]) -> list[int]:
    return [int(v) for v in values if v.isdigit()]


@bp.get("/campaigns/stuck")
@roles_required(*CAMPAIGN_ROLES)
def campaigns_stuck():
    """Messages left "being sent" by an interrupted run, to release."""
    minutes = stuck_minutes(request.args.get("minutes"))
    rows = service.stuck(main_session(), timedelta(minutes=minutes))
    return render_template(CT + "stuck.html", rows=rows, minutes=minutes, **_names())


@bp.post("/campaigns/stuck")
@roles_required(*CAMPAIGN_ROLES)
def release_campaigns_stuck():
    """Back to the queue, or failed for good; audited (``campaign.release``)."""
    minutes = stuck_minutes(request.form.get("minutes"))
    to = request.form.get("to")
    if to not in service.RELEASE_TO:
        flash(_("Choose whether to send them again or to mark them failed."), "error")
        return redirect(url_for(".campaigns_stuck", minutes=minutes), 303)
    released = service.release(main_session(), current_user.principal.actor,
                               "backoffice:campaigns", chosen_ids(request.form.getlist("message")),
                               to, timedelta(minutes=minutes))
    if to == "pending":
        flash(ngettext("%(num)d message put back in the queue.",
                       "%(num)d messages put back in the queue.", len(released)), "ok")
    else:
        flash(ngettext("%(num)d message marked failed.", "%(num)d messages marked failed.",
                       len(released)), "ok")
    return redirect(url_for(".campaigns_stuck", minutes=minutes), 303)
