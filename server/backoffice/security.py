"""Who is using the back office: the session cookie, CSRF on every form, login and roles.

The session is Flask's signed cookie, signed with ``SECRET_KEY`` or else with a key read from
``SECRET_KEY_FILE`` (created on first use, like the other key files). It holds the staff
member's id and two times only: the account is read again on every request, so a disabled
account or a new role counts at once. A session ends after ``PERMANENT_SESSION_LIFETIME``
seconds without a request (30 minutes by default) and ``BACKOFFICE_SESSION_MAX`` seconds after
its login (12 hours) whatever happens: the cookie carries both times, signed, and every
request checks them (the signature's own age enforces the idle limit too). It also carries a
fingerprint of the password hash it was opened with: a new password (set by the member or an
admin) ends every session opened with the old one, on every device. CSRF protection
covers every POST of the service except the ``/api/v1`` blueprints, which authenticate each
request by header and never by cookie.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, UserMixin, current_user, logout_user
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select

from server.db import main_session
from server.devices.auth import Principal, StaffMember
from server.secrets_file import app_secret_key
from server.staff.models import Staff
from server.stores.models import Store

log = logging.getLogger(__name__)

URL_PREFIX = "/backoffice"
csrf = CSRFProtect()
login_manager = LoginManager()
# kept when a login starts or ends: the staff member's choice of language
KEPT = ("lang",)
# when the session's login happened, and its last request (seconds since the epoch)
STARTED, SEEN = "started", "seen"
# the fingerprint of the password hash the session was opened with
CREDENTIAL = "cred"


class KeyFileSessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose key comes from ``SECRET_KEY_FILE`` when none is set.

    Read when the first request opens a session, not when the app is created, so creating
    the app touches no file; two workers starting together agree on one key file.
    """

    def get_signing_serializer(self, app: Flask):
        app_secret_key(app)
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request):
        # the API's callers authenticate on each request and carry no cookie session: no
        # serializer made (and key file checked) on every tap
        if request.path.startswith("/api/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


@dataclass(frozen=True)
class StaffUser(UserMixin):
    """The logged-in staff member, as read from the database on this request."""

    id: int
    username: str
    role: str
    store_id: int | None
    store_code: str | None
    country: str | None
    credential: str  # fingerprint of the current password hash (never the hash itself)

    def get_id(self) -> str:
        return str(self.id)

    @property
    def principal(self) -> Principal:
        """The caller the privacy services audit (``staff:<id>``)."""
        return Principal("staff", self.role, self.id, self.store_id,
                         StaffMember(self.id, self.username, self.role), self.store_code,
                         self.country)


def credential_fingerprint(password_hash: str) -> str:
    """A short digest of the argon2 hash: changes with every new password (new salt)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def load_staff(staff_id: int) -> StaffUser | None:
    """The enabled staff member with this id, or None."""
    row = main_session().execute(
        select(Staff.id, Staff.username, Staff.role, Staff.store_id, Store.code, Store.country,
               Staff.password_hash)
        .outerjoin(Store, Store.id == Staff.store_id)
        .where(Staff.id == staff_id, Staff.disabled_at.is_(None))
    ).first()
    return StaffUser(*row[:-1], credential_fingerprint(row[-1])) if row else None


@login_manager.user_loader
def _user(user_id: str) -> StaffUser | None:
    return load_staff(int(user_id)) if user_id.isdigit() else None


@login_manager.unauthorized_handler
def _log_in_first():
    """To the login page; back to the page asked for afterwards (a GET: a form is lost)."""
    if not session.get("_flashes"):  # "your session ended" says it already
        flash(str(login_manager.login_message), "info")
    after = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for(login_manager.login_view, next=after))


def restart_session() -> None:
    """Empty the session but for the language: at login (no fixation) and at logout."""
    kept = {k: session[k] for k in KEPT if k in session}
    session.clear()
    session.update(kept)


def start_session(user: StaffUser) -> None:
    """Mark the login's time and password: the limits count from here, a new password ends it."""
    session.permanent = True  # the cookie expires after PERMANENT_SESSION_LIFETIME idle
    session[STARTED] = session[SEEN] = int(time.time())
    session[CREDENTIAL] = user.credential


def _expired(now: float) -> bool:
    idle = current_app.permanent_session_lifetime.total_seconds()
    most = int(current_app.config.get("BACKOFFICE_SESSION_MAX") or 12 * 3600)
    # a session without the times (made before they existed) has expired too
    return (now - session.get(SEEN, 0) > idle) or (now - session.get(STARTED, 0) > most)


def forget_stale_login() -> None:
    """End a session idle too long, too old, or whose staff member is gone or disabled."""
    if request.endpoint == "backoffice.static":
        return
    if not session.get("_user_id"):
        return
    now = time.time()
    if _expired(now):
        log.info("back-office session of staff %s ended: idle or too old",
                 session.get("_user_id"))
        logout_user()
        restart_session()
        flash(str(_l("Your session has ended. Please log in again.")), "info")
        return
    session[SEEN] = int(now)
    if not current_user.is_authenticated:
        log.info("back-office session of staff %s ended: account disabled or removed",
                 session.get("_user_id"))
        restart_session()
    elif session.get(CREDENTIAL) != current_user.credential:
        log.info("back-office session of staff %s ended: the password was changed",
                 session.get("_user_id"))
        logout_user()
        restart_session()
        flash(str(_l("Your password was changed. Please log in again.")), "info")


def roles_required(*roles: str) -> Callable:
    """Let only logged-in staff with one of ``roles`` see the page; others get the 403 page."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        wrapper.required_roles = roles
        return wrapper

    return decorate


def local_url(target: str | None, prefix: str) -> str | None:
    """``target`` if it is a path of this site under ``prefix`` (never another host)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(prefix) or "\\" in target:
        return None
    return target


def init_app(app: Flask, csrf_exempt: Blueprint) -> None:
    """Sessions, CSRF and login for the app; ``csrf_exempt`` and its children skip CSRF."""
    app.session_interface = KeyFileSessionInterface()
    app.config.update(
        # its own name and path: the kiosk on another port of the same host has a cookie too
        SESSION_COOKIE_NAME="loyalty_backoffice",
        SESSION_COOKIE_PATH=URL_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # a form may stay open for long; the token lasts as long as the session
        WTF_CSRF_TIME_LIMIT=None,
    )
    csrf.init_app(app)
    # Flask-WTF compares only the innermost blueprint of a request with its exemptions, so
    # each blueprint mounted under the API is exempted by name
    for name, blueprint in app.blueprints.items():
        if name == csrf_exempt.name or name.startswith(csrf_exempt.name + "."):
            csrf.exempt(blueprint)

    login_manager.init_app(app)
    login_manager.login_view = "backoffice.login"
    login_manager.login_message = _l("Please log in to see this page.")
    # sessions are permanent (expiring after PERMANENT_SESSION_LIFETIME idle), which makes
    # "strong" behave as "basic": a session moved to another browser is marked not fresh
    login_manager.session_protection = "basic"
