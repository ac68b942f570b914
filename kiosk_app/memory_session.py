"""Kiosk sessions kept in the kiosk's own memory: the browser holds a random id, nothing more.

A half-filled enrolment (name, email, phone, survey answers) never travels in a cookie, never
reaches Chromium's profile on disk, and is gone from memory when it expires or is reset. The
kiosk runs one process (gunicorn ``-w 1 --threads N``): every thread sees the same sessions,
and a request changing the session changes it for every other request of that browser at once
(no last-writer-wins between two overlapping requests, as a cookie session would have).
"""

from __future__ import annotations

import secrets
import threading
import time

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

COOKIE = "kiosk_session"


class KioskSession(CallbackDict, SessionMixin):
    """A session dict with an id; ``rotate()`` gives it a new id when a customer leaves."""

    def __init__(self, sid: str, initial: dict | None = None) -> None:
        def touched(_self) -> None:
            self.modified = True

        super().__init__(initial, touched)
        self.sid = sid
        self.new_sid: str | None = None
        self.modified = False
        self.touched_at = time.monotonic()

    def rotate(self) -> None:
        """Answer with a new id: the previous customer's cookie no longer names anything."""
        self.new_sid = secrets.token_urlsafe(24)
        self.modified = True


class MemorySessionInterface(SessionInterface):
    """Sessions in a dict, dropped ``max_idle`` seconds after their last request."""

    def __init__(self, max_idle: float) -> None:
        self.max_idle = max_idle
        self.sessions: dict[str, KioskSession] = {}
        self.lock = threading.Lock()

    def _sweep(self, now: float) -> None:
        for sid, stored in list(self.sessions.items()):
            if now - stored.touched_at > self.max_idle:
                self.sessions.pop(sid, None)

    def open_session(self, app: Flask, request: Request) -> KioskSession:
        now = time.monotonic()
        sid = request.cookies.get(COOKIE, "")
        with self.lock:
            self._sweep(now)
            found = self.sessions.get(sid) if sid else None
            if found is None:
                found = KioskSession(secrets.token_urlsafe(24))
                found.new_sid = found.sid
            found.touched_at = now
            return found

    def save_session(self, app: Flask, session: KioskSession,  # type: ignore[override]
                     response: Response) -> None:
        with self.lock:
            if session.new_sid and session.new_sid != session.sid:
                self.sessions.pop(session.sid, None)
                session.sid = session.new_sid
            send_cookie = session.new_sid is not None
            session.new_sid = None
            if session:
                self.sessions[session.sid] = session
            else:
                self.sessions.pop(session.sid, None)
        if session and send_cookie:
            response.set_cookie(COOKIE, session.sid, httponly=True, samesite="Strict",
                                path=self.get_cookie_path(app))
