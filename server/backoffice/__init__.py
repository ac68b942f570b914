"""The staff back office at ``/backoffice``: finding a customer, their personal data and
consents, access exports, erasure, the audit log and the retention list.

Pages over the same services as the API (``server.privacy``): every read of personal data is
audited, naming the screen. Staff log in with their argon2 password; the session cookie is
HttpOnly and SameSite=Strict; every form carries a CSRF token (``security``). The screens of
later features (tickets, accounts) join ``views`` the same way.
"""
