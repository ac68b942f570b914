"""Logging in and out, and the language of the back office."""

from __future__ import annotations

import logging

from flask import (
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user

from server.api.problems import Problem
from server.backoffice.blueprint import (
    T,
    bp,
)
from server.backoffice.forms import (
    LoginForm,
)
from server.backoffice.security import (
    load_staff,
    local_url,
    restart_session,
)
from server.db import main_session
from server.devices.auth import verify_staff
from server.i18n import LANGUAGES

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- session


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The staff member's user name and password (argon2); one message for every failure."""
    next_url = local_url(request.args.get("next"), bp.url_prefix)
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for(".index"))
    form = LoginForm()
    if request.method == "GET":
        return render_template(T + "login.html", form=form, next_url=next_url)
    try:
        member = verify_staff(main_session(), (form.username.data or "").strip(),
                              form.password.data or "")
    except Problem:
        log.info("back-office login refused")
        return render_template(T + "login.html", form=form, next_url=next_url, error=_(
            "Unknown user name or wrong password.")), 200
    restart_session()  # a new session for the new login: nothing carried over
    login_user(load_staff(member.id))
    session.permanent = True  # ends after PERMANENT_SESSION_LIFETIME without a request
    log.info("back-office login: staff %s (%s)", member.id, member.role)
    return redirect(next_url or url_for(".index"), 303)


@bp.post("/logout")
def logout():
    logout_user()
    restart_session()
    flash(_("You are logged out."), "info")
    return redirect(url_for(".login"), 303)


@bp.post("/language")
def language():
    """Keep the staff member's language in the session (``server.i18n`` reads it)."""
    if request.form.get("lang") in LANGUAGES:
        session["lang"] = request.form["lang"]
    return redirect(local_url(request.form.get("next"), bp.url_prefix) or url_for(".index"),
                    303)



