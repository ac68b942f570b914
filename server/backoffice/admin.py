"""Administration: stores, devices and staff (administrators), the loyalty programme
(managers and administrators).

Each page calls the same services as the CLI (``server.stores.service``,
``server.devices.service``, ``server.staff.service``, ``server.loyalty.programmes``); every
change is entered in the audit log under ``backoffice:admin``. A device's key is shown once,
on the page that answers its registration, and never again: it is neither logged nor audited.
A refusal is shown on the page and nothing the request wrote is kept.
"""

from __future__ import annotations

import logging
from importlib import resources

from babel.dates import get_day_names
from flask import flash, redirect, render_template, request, url_for
from flask_babel import format_timedelta, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from sqlalchemy import select
from wtforms import BooleanField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice as Choice

from server import db
from server.api.problems import Problem
from server.backoffice.blueprint import ROLE_NAMES, T, bp, nav, principal
from server.backoffice.security import roles_required
from server.db import main_session, utcnow
from server.devices import service as devices
from server.devices.models import ROLES as DEVICE_ROLES
from server.loyalty import programmes
from server.loyalty.models import ProgrammeVersion
from server.staff import service as staff_service
from server.staff.models import ROLES as STAFF_ROLES
from server.staff.models import Staff
from server.stores import service as stores
from server.stores.service import VIEW, Refused

log = logging.getLogger(__name__)
A = T + "admin/"
ADMIN_ROLES = ("admin",)
PROGRAMME_ROLES = ("manager", "admin")

# last in the header
nav("backoffice.admin_programme", _l("Programme"), PROGRAMME_ROLES,
    also=("backoffice.admin_programme_load", "backoffice.admin_programme_version"), order=50)
nav("backoffice.admin_stores", _l("Stores"), ADMIN_ROLES,
    also=("backoffice.admin_store", "backoffice.admin_store_add"), order=60)
nav("backoffice.admin_devices", _l("Devices"), ADMIN_ROLES,
    also=("backoffice.admin_device_add", "backoffice.admin_device_revoke"), order=70)
nav("backoffice.admin_staff", _l("Staff"), ADMIN_ROLES,
    also=("backoffice.admin_staff_add", "backoffice.admin_staff_member",
          "backoffice.admin_staff_action"), order=80)

# what a staff member is told when a service refuses (by ``Refused.code``)
REFUSALS = {
    "name-invalid": _l("A name is required (120 characters at most)."),
    "country-invalid": _l("Choose France or Lithuania."),
    "code-invalid": _l("A store code has 1 to 32 letters, digits, - or _ (e.g. PARIS-01)."),
    "store-exists": _l("There is already a store %(code)s."),
    "store-unknown": _l("There is no such store."),
    "region-invalid": _l("A region has at most 80 characters."),
    "role-invalid": _l("Choose one of the roles offered."),
    "device-unknown": _l("There is no such device."),
    "device-revoked": _l("This device is revoked already."),
    "username-invalid": _l("A user name has 1 to 64 letters, digits or . _ @ - (no spaces)."),
    "staff-exists": _l("There is already a staff member %(username)s."),
    "staff-unknown": _l("There is no such staff member."),
    "password-short": _l("A password has at least 10 characters."),
    "pin-invalid": _l("A PIN has 4 to 8 digits."),
    "uid-invalid": _l("A card number (UID) has 8 to 20 hexadecimal digits."),
    "card-taken": _l("This card belongs to another staff member."),
    "last-admin": _l("%(username)s is the last administrator: make someone else an "
                     "administrator first."),
    "self": _l("You cannot change your own role, store or account here: ask another "
               "administrator."),
}
DEVICE_ROLE_NAMES = {"kiosk": _l("kiosk"), "till": _l("till")}
COUNTRY_CHOICES = [Choice("FR", _l("France")), Choice("LT", _l("Lithuania"))]


def _refusal(exc: Refused) -> str:
    message = REFUSALS.get(exc.code)
    return str(message) % exc.params if message is not None and exc.params else \
        str(message or _l("This could not be done."))


def _refused(exc: Refused, target: str):
    """Discard what the request wrote, say why, go back to ``target``."""
    db.finish_request(success=False)
    log.info("administration %s %s refused: %s", request.method, request.path, exc.code)
    flash(_refusal(exc), "error")
    return redirect(target, 303)


def _actor() -> str:
    return principal().actor


def _store_choices(empty: str | None = None) -> list[Choice]:
    rows = stores.list_stores(main_session())
    choices = [Choice("", empty)] if empty is not None else []
    return choices + [Choice(str(r.id), f"{r.code} · {r.name}") for r in rows]


def _store_or_none(value: str | None):
    return stores.get(main_session(), int(value)) if value and value.isdigit() else None


# --------------------------------------------------------------------------- forms


class StoreForm(FlaskForm):
    code = StringField(_l("Code"), description=_l("Short and unique, e.g. PARIS-01: tills, "
                                                  "the programme's promotions and the "
                                                  "command line name the store by it."),
                       render_kw={"autocomplete": "off", "spellcheck": "false"})
    name = StringField(_l("Name"), render_kw={"autocomplete": "off"})
    country = SelectField(_l("Country"), choices=COUNTRY_CHOICES,
                          description=_l("How phone numbers typed without +33 or +370 are "
                                         "read."))
    allow_uid_only = BooleanField(_l("Accept old cards identified by their UID alone (weak: "
                                     "such a card is easy to copy)"))
    region = StringField(_l("Region"), description=_l(
        "Optional, as you say it (Vilnius, Île-de-France): segments select customers by "
        "their home store's region."), render_kw={"maxlength": 80})


class DeviceForm(FlaskForm):
    store = SelectField(_l("Store"))
    role = SelectField(_l("Role"), choices=[Choice(r, DEVICE_ROLE_NAMES[r])
                                            for r in DEVICE_ROLES])
    name = StringField(_l("Name"), description=_l("Where it is, e.g. Welcome desk or Till 2."),
                       render_kw={"autocomplete": "off"})


class ConfirmForm(FlaskForm):
    """A button only: the CSRF token."""


class StaffAddForm(FlaskForm):
    username = StringField(_l("User name"), render_kw={"autocomplete": "off",
                                                       "spellcheck": "false"})
    role = SelectField(_l("Role"), choices=[Choice(r, ROLE_NAMES[r]) for r in STAFF_ROLES])
    store = SelectField(_l("Store"))
    password = PasswordField(_l("Password"), description=_l("At least 10 characters. Give it "
                                                            "to the person privately."),
                             render_kw={"autocomplete": "new-password"})


class StaffChangeForm(FlaskForm):
    role = SelectField(_l("Role"), choices=[Choice(r, ROLE_NAMES[r]) for r in STAFF_ROLES])
    store = SelectField(_l("Store"))


class PasswordForm(FlaskForm):
    password = PasswordField(_l("New password"), description=_l("At least 10 characters."),
                             render_kw={"autocomplete": "new-password"})


class PinForm(FlaskForm):
    pin = PasswordField(_l("Kiosk PIN"), description=_l("4 to 8 digits: with the user name, "
                                                         "it opens staff mode on a kiosk."),
                        render_kw={"autocomplete": "off", "inputmode": "numeric"})


class CardForm(FlaskForm):
    uid = StringField(_l("Staff card number (UID)"),
                      description=_l("In hexadecimal, as a till's reader shows it, e.g. "
                                     "04A1B2C3D4E5F6. A tap of this card opens staff mode on a "
                                     "kiosk."),
                      render_kw={"autocomplete": "off", "spellcheck": "false"})


class ProgrammeForm(FlaskForm):
    source = TextAreaField(_l("Programme (TOML)"), render_kw={"rows": 18, "spellcheck": "false",
                                                              "class": "mono"})
    file = FileField(_l("Or upload a .toml file"), render_kw={"accept": ".toml,text/plain"})


# --------------------------------------------------------------------------- stores


@bp.get("/admin/stores")
@roles_required(*ADMIN_ROLES)
def admin_stores():
    """The stores, with their active devices and staff; a form to add one."""
    return _stores_page(StoreForm(formdata=None))


def _stores_page(form: StoreForm, status: int = 200):
    return render_template(A + "stores.html", rows=stores.list_stores(main_session()),
                           form=form), status


@bp.post("/admin/stores")
@roles_required(*ADMIN_ROLES)
def admin_store_add():
    form = StoreForm()
    try:
        store = stores.add(main_session(), code=form.code.data, name=form.name.data,
                           country=form.country.data, allow_uid_only=form.allow_uid_only.data,
                           actor=_actor(), region=form.region.data)
    except Refused as exc:
        _field_error(form, exc, {"code-invalid": "code", "store-exists": "code",
                                 "name-invalid": "name", "country-invalid": "country",
                                 "region-invalid": "region"})
        return _stores_page(form, 422)
    flash(_("Store %(code)s added.", code=store.code), "ok")
    return redirect(url_for(".admin_stores"), 303)


@bp.route("/admin/stores/<int:store_id>", methods=["GET", "POST"])
@roles_required(*ADMIN_ROLES)
def admin_store(store_id: int):
    """One store: its name, country and UID-only setting (its code never changes)."""
    main = main_session()
    try:
        store = stores.get(main, store_id)
    except Refused as exc:
        return _refused(exc, url_for(".admin_stores"))
    if request.method == "GET":
        form = StoreForm(formdata=None, obj=store)
        return render_template(A + "store.html", store=store, form=form)
    form = StoreForm()
    try:
        changed = stores.edit(main, store, name=form.name.data, country=form.country.data,
                              allow_uid_only=form.allow_uid_only.data, actor=_actor(),
                              region=form.region.data)
    except Refused as exc:
        _field_error(form, exc, {"name-invalid": "name", "country-invalid": "country",
                                 "region-invalid": "region"})
        return render_template(A + "store.html", store=store, form=form), 422
    flash(_("Store %(code)s saved.", code=store.code) if changed else
          _("Nothing was changed."), "ok" if changed else "info")
    return redirect(url_for(".admin_stores"), 303)


def _field_error(form: FlaskForm, exc: Refused, fields: dict[str, str]) -> None:
    """Put the refusal's message on its field, or on the form."""
    name = fields.get(exc.code)
    if name:
        form[name].errors = [_refusal(exc)]
    else:
        form.form_errors.append(_refusal(exc))


# --------------------------------------------------------------------------- devices


def last_seen(moment) -> str:
    """``never``, ``2 minutes ago`` (in the page's language)."""
    if moment is None:
        return _("never")
    return format_timedelta(moment - utcnow(), granularity="second", add_direction=True)


@bp.get("/admin/devices")
@roles_required(*ADMIN_ROLES)
def admin_devices():
    """Devices by store: role, registered, last seen, the last heartbeat's report."""
    form = DeviceForm(formdata=None)
    form.store.choices = _store_choices()
    return _devices_page(form)


def _devices_page(form: DeviceForm, status: int = 200):
    rows = devices.list_devices(main_session())
    by_store: dict[str, list] = {}
    for row in rows:
        by_store.setdefault(f"{row.store_code} · {row.store_name}", []).append(row)
    return render_template(A + "devices.html", by_store=by_store, form=form,
                           last_seen=last_seen, device_roles=DEVICE_ROLE_NAMES,
                           stale_minutes=int(devices.STALE_AFTER.total_seconds() // 60)), status


@bp.post("/admin/devices")
@roles_required(*ADMIN_ROLES)
def admin_device_add():
    """Register a device; its key is on the answer, once."""
    form = DeviceForm()
    form.store.choices = _store_choices()
    main = main_session()
    try:
        store = _store_or_none(form.store.data)
        if store is None:
            raise Refused("store-unknown", "no store")
        device, key = devices.register(main, store=store, role=form.role.data,
                                       name=form.name.data, actor=_actor())
    except Refused as exc:
        _field_error(form, exc, {"store-unknown": "store", "role-invalid": "role",
                                 "name-invalid": "name"})
        return _devices_page(form, 422)
    return render_template(A + "device_key.html", device=device, store=store, key=key,
                           device_roles=DEVICE_ROLE_NAMES)


@bp.route("/admin/devices/<int:device_id>/revoke", methods=["GET", "POST"])
@roles_required(*ADMIN_ROLES)
def admin_device_revoke(device_id: int):
    """Ask, then refuse the device's key from the next request on."""
    main = main_session()
    try:
        device = devices.get(main, device_id)
        if request.method == "GET":
            if device.revoked_at is not None:
                raise Refused("device-revoked", "revoked already")
            return render_template(A + "device_revoke.html", device=device,
                                   store=stores.get(main, device.store_id), form=ConfirmForm(),
                                   device_roles=DEVICE_ROLE_NAMES)
        devices.revoke(main, device, actor=_actor())
    except Refused as exc:
        return _refused(exc, url_for(".admin_devices"))
    flash(_("Device %(name)s revoked: its key is refused from now on.", name=device.name), "ok")
    return redirect(url_for(".admin_devices"), 303)


# --------------------------------------------------------------------------- staff


@bp.get("/admin/staff")
@roles_required(*ADMIN_ROLES)
def admin_staff():
    """Every staff account; a form to add one."""
    form = StaffAddForm(formdata=None)
    form.store.choices = _store_choices(str(_l("no store")))
    return _staff_page(form)


def _staff_page(form: StaffAddForm, status: int = 200):
    return render_template(A + "staff.html", rows=staff_service.list_staff(main_session()),
                           form=form), status


@bp.post("/admin/staff")
@roles_required(*ADMIN_ROLES)
def admin_staff_add():
    form = StaffAddForm()
    form.store.choices = _store_choices(str(_l("no store")))
    try:
        member = staff_service.add(main_session(), username=form.username.data,
                                   role=form.role.data, store=_store_or_none(form.store.data),
                                   password=form.password.data, actor=_actor())
    except Refused as exc:
        _field_error(form, exc, {"username-invalid": "username", "staff-exists": "username",
                                 "role-invalid": "role", "store-unknown": "store",
                                 "password-short": "password"})
        return _staff_page(form, 422)
    flash(_("Staff member %(name)s added.", name=member.username), "ok")
    return redirect(url_for(".admin_staff_member", staff_id=member.id), 303)


def _member_page(member: Staff, status: int = 200, **forms):
    change = forms.get("change") or StaffChangeForm(formdata=None, role=member.role,
                                                    store=str(member.store_id or ""))
    change.store.choices = _store_choices(str(_l("no store")))
    return render_template(
        A + "staff_member.html", member=member, change=change,
        password=forms.get("password") or PasswordForm(formdata=None),
        pin=forms.get("pin") or PinForm(formdata=None),
        card=forms.get("card") or CardForm(formdata=None), confirm=ConfirmForm(),
        store=stores.get(main_session(), member.store_id) if member.store_id else None,
        myself=member.id == principal().id), status


@bp.get("/admin/staff/<int:staff_id>")
@roles_required(*ADMIN_ROLES)
def admin_staff_member(staff_id: int):
    """One account: role and store, enabled, password, kiosk PIN, staff card."""
    try:
        member = staff_service.get(main_session(), staff_id)
    except Refused as exc:
        return _refused(exc, url_for(".admin_staff"))
    return _member_page(member)


# what each action's form is, which field its refusals go to, and what is said when it is done
ACTIONS = {
    "change": (StaffChangeForm, "role"),
    "password": (PasswordForm, "password"),
    "pin": (PinForm, "pin"),
    "pin-clear": (ConfirmForm, None),
    "card": (CardForm, "uid"),
    "card-clear": (ConfirmForm, None),
    "disable": (ConfirmForm, None),
    "enable": (ConfirmForm, None),
}


@bp.post("/admin/staff/<int:staff_id>/<action>")
@roles_required(*ADMIN_ROLES)
def admin_staff_action(staff_id: int, action: str):
    """One change to an account (each audited; never a password, PIN or UID in the log)."""
    if action not in ACTIONS:
        return redirect(url_for(".admin_staff_member", staff_id=staff_id), 303)
    main = main_session()
    here = url_for(".admin_staff_member", staff_id=staff_id)
    try:
        member = staff_service.get(main, staff_id)
    except Refused as exc:
        return _refused(exc, url_for(".admin_staff"))
    form_class, field = ACTIONS[action]
    form = form_class()
    if action == "change":
        form.store.choices = _store_choices(str(_l("no store")))
    who, actor, by = member.username, _actor(), principal().id
    try:
        if action == "change":
            changed = staff_service.change(main, member, role=form.role.data,
                                           store=_store_or_none(form.store.data), actor=actor,
                                           by=by)
            message = _("%(name)s: role and store saved.", name=who) if changed else \
                _("Nothing was changed.")
        elif action == "password":
            staff_service.reset_password(main, member, form.password.data or "", actor=actor)
            message = _("%(name)s has a new password.", name=who)
        elif action == "pin":
            staff_service.set_pin(main, member, form.pin.data or "", actor=actor)
            message = _("%(name)s has a new kiosk PIN.", name=who)
        elif action == "pin-clear":
            staff_service.set_pin(main, member, None, actor=actor)
            message = _("%(name)s has no kiosk PIN any more.", name=who)
        elif action == "card":
            staff_service.set_card(main, member, form.uid.data or "", actor=actor)
            message = _("%(name)s's staff card is registered.", name=who)
        elif action == "card-clear":
            staff_service.set_card(main, member, None, actor=actor)
            message = _("%(name)s's staff card is forgotten.", name=who)
        else:
            enabled = action == "enable"
            staff_service.set_enabled(main, member, enabled, actor=actor, by=by)
            message = _("%(name)s can log in again.", name=who) if enabled else \
                _("%(name)s is disabled: logged out everywhere at once.", name=who)
    except Refused as exc:
        if field is None or exc.code in ("self", "last-admin"):
            return _refused(exc, here)
        form[field].errors = [_refusal(exc)]
        return _member_page(member, 422, **{action: form})
    flash(message, "ok")
    return redirect(here, 303)


# --------------------------------------------------------------------------- programme


def _default_source() -> str:
    return resources.files("server.loyalty").joinpath("default_programme.toml").read_text(
        encoding="utf-8")


def _staff_names(main, actors) -> dict[str, str]:
    """``staff:7`` -> ``marie``, for the version history."""
    ids = {int(a.split(":", 1)[1]) for a in actors
           if a.startswith("staff:") and a.split(":", 1)[1].isdigit()}
    if not ids:
        return {}
    rows = main.execute(select(Staff.id, Staff.username).where(Staff.id.in_(ids)))
    return {f"staff:{i}": name for i, name in rows}


def _programme_page(form: ProgrammeForm, errors=None, summary: str | None = None,
                    status: int = 200):
    main = main_session()
    version, programme = programmes.current(main)
    history = main.execute(select(ProgrammeVersion.id, ProgrammeVersion.loaded_by,
                                  ProgrammeVersion.loaded_at)
                           .order_by(ProgrammeVersion.id.desc()).limit(50)).all()
    source = main.scalar(select(ProgrammeVersion.source).where(ProgrammeVersion.id == version)) \
        if version else _default_source()
    return render_template(
        A + "programme.html", version=version, programme=programme, source=source,
        history=history, names=_staff_names(main, [h.loaded_by for h in history]), form=form,
        errors=errors, summary=summary, weekdays=get_day_names("wide", locale=get_locale())), status


@bp.get("/admin/programme")
@roles_required(*PROGRAMME_ROLES)
def admin_programme():
    """The programme in force, readable and as TOML; its versions; loading a new one."""
    return _programme_page(ProgrammeForm(formdata=None))


@bp.post("/admin/programme")
@roles_required(*PROGRAMME_ROLES)
def admin_programme_load():
    """Validate a pasted or uploaded TOML programme; in force at once, or nothing changes."""
    form = ProgrammeForm()
    upload = form.file.data
    text = ""
    if upload and getattr(upload, "filename", ""):
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            form.file.errors = [_("This file is not UTF-8 text.")]
            return _programme_page(form, status=422)
        form.source.data = text
    else:
        text = form.source.data or ""
    if not text.strip():
        form.source.errors = [_("Paste the programme or choose a file.")]
        return _programme_page(form, status=422)
    main = main_session()
    try:
        version, programme = programmes.load(main, text, _actor())
    except Problem as exc:
        errors = exc.extra.get("errors") or [{"field": "", "message": exc.detail}]
        log.info("programme refused: %d problem(s)", len(errors))
        return _programme_page(form, errors=errors, status=422)
    stores.record_change(main, _actor(), "programme.load", VIEW, {"version": version})
    flash(_("Programme version %(version)s is in force (tiers: %(tiers)s, rewards: %(rewards)s).",
            version=version, tiers=len(programme.tiers), rewards=len(programme.rewards)), "ok")
    return redirect(url_for(".admin_programme"), 303)


@bp.get("/admin/programme/versions/<int:version>")
@roles_required(*PROGRAMME_ROLES)
def admin_programme_version(version: int):
    """An earlier version's TOML, as it was loaded."""
    main = main_session()
    row = main.execute(select(ProgrammeVersion.id, ProgrammeVersion.source,
                              ProgrammeVersion.loaded_by, ProgrammeVersion.loaded_at)
                       .where(ProgrammeVersion.id == version)).first()
    if row is None:
        flash(_("There is no such version."), "error")
        return redirect(url_for(".admin_programme"), 303)
    return render_template(A + "programme_version.html", row=row,
                           names=_staff_names(main, [row.loaded_by]))
