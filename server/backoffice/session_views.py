"""Logging in and out, and the language of the back office.

Failed logins are counted by ``server.staff.lockout`` through ``verify_staff``: for the name
typed (known or not) and for the client's address. An unknown name and a wrong password get
the same message; a lock says only that there were too many attempts and when to try again,
for a name that exists or not, and refuses the right password too.
"""

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
from flask_babel import ngettext
from flask_login import current_user, login_user, logout_user

from server import ratelimit
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
    start_session,
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
        # attempts per client address, failed or not (failures also lock: server.staff.lockout)
        ratelimit.hit("logins", "addr", request.remote_addr or "unknown")
        member = verify_staff(main_session(), (form.username.data or "").strip(),
                              form.password.data or "")
    except Problem as exc:
        if exc.slug in ("staff-locked-out", "rate-limited"):
            return _locked_out(form, next_url, int(exc.extra.get("retry_after", 60)))
        log.info("back-office login refused")
        return render_template(T + "login.html", form=form, next_url=next_url, error=_(
            "Unknown user name or wrong password.")), 200
    restart_session()  # a new session for the new login: nothing carried over
    user = load_staff(member.id)
    login_user(user)
    start_session(user)  # ends after PERMANENT_SESSION_LIFETIME idle, BACKOFFICE_SESSION_MAX,
    # or a new password
    log.info("back-office login: staff %s (%s)", member.id, member.role)
    return redirect(next_url or url_for(".index"), 303)


def _locked_out(form, next_url: str | None, seconds: int):
    """The login page saying when to try again (the same for a name that exists or not)."""
    minutes = max(1, -(-seconds // 60))  # rounded up: never "try again in 0 minutes"
    error = ngettext("Too many failed attempts. Try again in %(num)d minute.",
                     "Too many failed attempts. Try again in %(num)d minutes.", minutes)
    return (render_template(T + "login.html", form=form, next_url=next_url, error=error), 429,
            {"Retry-After": str(seconds)})


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



