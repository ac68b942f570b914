"""Configuration: defaults, then a TOML file, then ``LOYALTY_*`` variables, then a mapping.

Every key can be set as ``LOYALTY_<KEY>`` in the environment (``LOYALTY_DATABASE_URL``,
``LOYALTY_VAULT_URL``, ...). ``LOYALTY_CONFIG_FILE`` names a TOML file with the same keys in
lower or upper case. Paths left unset live in the instance folder (``LOYALTY_INSTANCE_PATH``,
default ``./instance``), which is created on first use and never committed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

PREFIX = "LOYALTY_"

DEFAULTS: dict[str, Any] = {
    "INSTANCE_PATH": "instance",
    "DATABASE_URL": None,  # sqlite:///<instance>/loyalty.db
    "VAULT_URL": None,  # sqlite:///<instance>/vault.db
    "VAULT_KEY_FILE": None,  # <instance>/vault.key
    "CARD_KEYS_FILE": None,  # <instance>/card-keys.json
    "SUN_KEYS_FILE": None,  # <instance>/sun-keys.json: NTAG 424 DNA keys (docs/CARDS-424.md)
    # SUN URL query parameter names, comma-separated aliases; where the MAC input starts
    "SUN_PICC_PARAMS": "picc_data,e,p",
    "SUN_ENC_PARAMS": "enc",
    "SUN_CMAC_PARAMS": "cmac,c",
    "SUN_MAC_INPUT": "auto",  # auto | empty | picc | enc | a character index in the URL
    "AUDIT_KEY_FILE": None,  # <instance>/audit.key: the audit chain's HMAC key
    # how often (seconds) a worker looks whether the key files changed (docs/KEYS.md)
    "KEY_FILE_CHECK_INTERVAL": 1.0,
    # <instance>/server-secret.key: signs the back office's session cookie (and its CSRF
    # tokens); created on first use unless SECRET_KEY itself is given
    "SECRET_KEY_FILE": None,
    # true behind HTTPS: the back office's cookie is then never sent over plain HTTP
    "SESSION_COOKIE_SECURE": False,
    # a back-office session ends after this many seconds without a request, and this many
    # seconds after its login whatever happens
    "PERMANENT_SESSION_LIFETIME": 30 * 60,
    "BACKOFFICE_SESSION_MAX": 12 * 3600,
    # the desk reader (a till agent in desk mode on each desk's PC, e.g.
    # http://127.0.0.1:8766): the search page fills itself from its reads; "" turns it off
    "BACKOFFICE_DESK_READER_URL": "",
    # a phone number typed without +33/+370 is read as a number of the store's country,
    # or of this one when there is no store (ISO 3166: FR, LT)
    "DEFAULT_COUNTRY": "FR",
    # retention: customers without a visit or purchase for this many days are told (where
    # their consent allows) and erased RETENTION_NOTICE_DAYS later unless they come back
    "RETENTION_INACTIVE_DAYS": 3 * 365,
    "RETENTION_NOTICE_DAYS": 30,
    # where mail goes: smtp://host:port (smtps:// for TLS; user:password@ allowed), or
    # file:<dir> to write each message as a file (the default, in <instance>/outbox)
    "MAIL_URL": None,
    "MAIL_FROM": "loyalty@shop.example",
    "CARD_BASE_URL": "http://127.0.0.1:8000",
    # a kiosk may issue the first card of each kind (QR, NFC) to a customer it enrolled within
    # this many seconds; later issues and every replacement need a staff member
    "KIOSK_ISSUE_WINDOW": 3600,
    # staff mode on a kiosk: session length
    "KIOSK_STAFF_SESSION": 300,
    # failed staff sign-ins (server/staff/lockout.py), within STAFF_LOCKOUT_WINDOW seconds:
    # so many for one user name or staff card lock it (back office, API and kiosk alike),
    # so many from one kiosk or till lock its staff sign-ins, so many from one client address
    # lock the back office and the API's Basic credential for that address (behind a proxy,
    # the proxy's address unless it passes the client's on with ProxyFix)
    "STAFF_LOCKOUT_WINDOW": 900,
    "STAFF_LOCKOUT_ATTEMPTS": 5,
    "STAFF_LOCKOUT_DEVICE": 20,
    "LOGIN_LOCKOUT_ADDRESS": 20,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # clone signals (server/taps/signals.py): a card tapped CARD_TAP_LIMIT times within
    # CARD_TAP_WINDOW seconds is refused and flagged (0: no limit); a card seen in two stores
    # within CLONE_STORE_MINUTES is flagged
    "CARD_TAP_LIMIT": 6,
    "CARD_TAP_WINDOW": 60,
    "CLONE_STORE_MINUTES": 30,
    # request rate limits (server/ratelimit.py), in the ``limits`` notation ("600/minute",
    # "10/minute;120/hour"; "" turns one off), counted where RATELIMIT_URL says: redis://...
    # for a chain (every node counts together), an SQLAlchemy URL for one machine (the
    # default: <instance>/ratelimit.db, shared by its gunicorn workers), memory:// for a
    # single process only
    "RATELIMIT_URL": None,
    "RATELIMIT_TAPS": "600/minute",  # per till (a replayed offline queue waits and goes on)
    "RATELIMIT_ENROLMENTS": "30/minute",  # per kiosk: a person takes a minute or more
    "RATELIMIT_LOGINS": "30/minute",  # back-office sign-in attempts per client address
    # response headers: HSTS (seconds; 0 = none) is sent only on requests that came in over
    # HTTPS (behind a proxy: with PROXY_FIX set, see docs/DEPLOY.md)
    "HSTS_MAX_AGE": 0,
    # how many reverse proxies in front set X-Forwarded-For/-Proto/-Host (0 = none: the
    # headers are ignored); exactly the number there are, never more
    "PROXY_FIX": 0,
    "SQL_ECHO": False,
    "LOG_LEVEL": "INFO",
}

_INTS = {"KIOSK_ISSUE_WINDOW", "KIOSK_STAFF_SESSION", "STAFF_LOCKOUT_WINDOW",
         "STAFF_LOCKOUT_ATTEMPTS", "STAFF_LOCKOUT_DEVICE", "LOGIN_LOCKOUT_ADDRESS",
         "MAX_CONTENT_LENGTH", "CARD_TAP_LIMIT",
         "CARD_TAP_WINDOW", "CLONE_STORE_MINUTES", "RETENTION_INACTIVE_DAYS",
         "RETENTION_NOTICE_DAYS", "PERMANENT_SESSION_LIFETIME", "BACKOFFICE_SESSION_MAX",
         "HSTS_MAX_AGE", "PROXY_FIX"}
_FLOATS = {"KEY_FILE_CHECK_INTERVAL"}
_BOOLS = {"SQL_ECHO", "SESSION_COOKIE_SECURE"}


def _coerce(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if key in _INTS:
            return int(value)
        if key in _FLOATS:
            return float(value)
        if key in _BOOLS:
            return value.strip().lower() in {"1", "true", "yes", "on"}
    return value


def load_config(overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Return the resolved configuration mapping (keys without the prefix)."""
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    config_file = (overrides or {}).get("CONFIG_FILE") or environ.get(PREFIX + "CONFIG_FILE")
    if config_file:
        with open(config_file, "rb") as fh:
            config.update({k.upper(): v for k, v in tomllib.load(fh).items()})
    for name, value in environ.items():
        if name.startswith(PREFIX) and name != PREFIX + "CONFIG_FILE":
            config[name[len(PREFIX):]] = value
    config.update(overrides or {})
    config = {k: _coerce(k, v) for k, v in config.items()}

    instance = Path(config["INSTANCE_PATH"]).resolve()
    config["INSTANCE_PATH"] = str(instance)
    defaults = {
        "DATABASE_URL": f"sqlite:///{instance / 'loyalty.db'}",
        "VAULT_URL": f"sqlite:///{instance / 'vault.db'}",
        "VAULT_KEY_FILE": str(instance / "vault.key"),
        "CARD_KEYS_FILE": str(instance / "card-keys.json"),
        "SUN_KEYS_FILE": str(instance / "sun-keys.json"),
        "AUDIT_KEY_FILE": str(instance / "audit.key"),
        "SECRET_KEY_FILE": str(instance / "server-secret.key"),
        "MAIL_URL": f"file:{instance / 'outbox'}",
        "RATELIMIT_URL": f"sqlite:///{instance / 'ratelimit.db'}",
    }
    for key, value in defaults.items():
        if not config.get(key):
            config[key] = value
    config["CARD_BASE_URL"] = str(config["CARD_BASE_URL"]).rstrip("/")
    return config
