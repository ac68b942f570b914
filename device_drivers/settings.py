"""Settings of the device processes (till agent, kiosk): defaults, ``LOYALTY_*``, overrides."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

PREFIX = "LOYALTY_"


def configure_logging(level: str) -> None:
    """Send log records to stderr (the journal under systemd) unless something already does.

    ``LOYALTY_LOG_LEVEL`` picks the level. Nothing the processes log carries personal data,
    keys or card tokens, at any level (tests/test_make_run.py runs at DEBUG and checks).
    """
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_settings(defaults: dict[str, Any], overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Return ``defaults`` updated from ``LOYALTY_<KEY>`` variables, then from ``overrides``.

    Values are converted to the type of their default (int, float, bool). ``DEVICE_KEY`` may
    instead come from the file named by ``LOYALTY_DEVICE_KEY_FILE`` (e.g. a systemd credential),
    so that the key never appears in a process listing or an environment dump.
    """
    environ = os.environ if environ is None else environ
    settings = dict(defaults)
    for key, default in defaults.items():
        raw = environ.get(PREFIX + key)
        if raw is None:
            continue
        if isinstance(default, bool):
            settings[key] = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif isinstance(default, int):
            settings[key] = int(raw)
        elif isinstance(default, float):
            settings[key] = float(raw)
        else:
            settings[key] = raw
    settings.update(overrides or {})
    key_file = settings.get("DEVICE_KEY_FILE") or environ.get(PREFIX + "DEVICE_KEY_FILE")
    if "DEVICE_KEY" in defaults and not settings.get("DEVICE_KEY") and key_file:
        settings["DEVICE_KEY"] = Path(key_file).read_text().strip()
    return settings
