"""Devices (kiosks, tills): register, revoke, list with what their heartbeat last said.

A device's key is made here and returned once: only its SHA-256 is stored, and nothing here
logs or audits it. A revoked key is refused by the very next request (``server.devices.auth``
reads ``revoked_at`` on every call). The CLI and the back office call these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.devices.auth import new_device_key
from server.devices.models import ROLES, Device
from server.stores.models import Store
from server.stores.service import VIEW, Refused, clean_name, record_change

log = logging.getLogger(__name__)

# a device whose last heartbeat is older is marked stale (it sends one every 30 s by default)
STALE_AFTER = timedelta(minutes=5)


def register(main: Session, *, store: Store, role: str, name: str, actor: str,
             view: str = VIEW) -> tuple[Device, str]:
    """Register a device in ``store``; returns it and its key, which is never shown again.

    ``actor`` empty only for the test and demo set-up (``server.cli.add_device``), which has
    no audit key to hand; every administration change passes one.

    Raises:
        Refused: ``role-invalid``, ``name-invalid``.
    """
    if role not in ROLES:
        raise Refused("role-invalid", f"a device's role is one of {', '.join(ROLES)}")
    name = clean_name(name)
    key, digest = new_device_key()
    device = Device(store_id=store.id, role=role, name=name, key_hash=digest)
    main.add(device)
    main.flush()
    if actor:
        record_change(main, actor, "device.register", view,
                      {"device": device.id, "store": store.code, "role": role, "name": name})
    log.info("device %s (%s) registered in %s by %s", device.id, role, store.code,
             actor or "set-up")
    return device, key


def get(main: Session, device_id: int) -> Device:
    """The device with this id.

    Raises:
        Refused: ``device-unknown``.
    """
    device = main.get(Device, device_id)
    if device is None:
        raise Refused("device-unknown", f"no device {device_id}", device=device_id)
    return device


def revoke(main: Session, device: Device, *, actor: str, view: str = VIEW) -> Device:
    """Refuse the device's key from now on.

    Raises:
        Refused: ``device-revoked`` if it is already.
    """
    if device.revoked_at is not None:
        raise Refused("device-revoked", f"device {device.id} is revoked already",
                      device=device.id)
    device.revoked_at = utcnow()
    main.flush()
    record_change(main, actor, "device.revoke", view,
                  {"device": device.id, "role": device.role, "name": device.name})
    log.info("device %s revoked by %s", device.id, actor)
    return device


@dataclass(frozen=True)
class DeviceRow:
    """A device as the administration shows it, with its last heartbeat's report."""

    id: int
    role: str
    name: str
    store_id: int
    store_code: str
    store_name: str
    created_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None
    stale: bool
    readers: list[dict] = field(default_factory=list)
    printer: dict | None = None
    queue: dict | None = None

    @property
    def readers_ready(self) -> int:
        return sum(1 for r in self.readers if r.get("status") == "ready")

    def report(self) -> str:
        """One line for the CLI: ``readers 1/2 ready, queue 3 waiting 1 refused``."""
        report = f"readers {self.readers_ready}/{len(self.readers)} ready" if self.readers \
            else "-"
        queue = self.queue or {}
        if queue.get("depth") or queue.get("failed"):
            report += f", queue {queue.get('depth', 0)} waiting {queue.get('failed', 0)} refused"
        if self.printer:
            report += f", printer {self.printer.get('status', 'unknown')}"
        return report


def list_devices(main: Session, now: datetime | None = None) -> list[DeviceRow]:
    """Every device by store, role and name; stale: its last heartbeat is older than STALE_AFTER."""
    now = now or utcnow()
    rows = main.execute(
        select(Device.id, Device.role, Device.name, Device.store_id, Store.code,
               Store.name.label("store_name"),
               Device.created_at, Device.revoked_at, Device.last_seen_at, Device.health)
        .join(Store, Store.id == Device.store_id)
        .order_by(Store.code, Device.role, Device.name, Device.id))
    devices = []
    for row in rows:
        health = row.health if isinstance(row.health, dict) else {}
        seen = row.last_seen_at
        devices.append(DeviceRow(
            row.id, row.role, row.name, row.store_id, row.code, row.store_name, row.created_at,
            row.revoked_at, seen,
            stale=row.revoked_at is None and seen is not None and now - seen > STALE_AFTER,
            readers=[r for r in health.get("readers") or [] if isinstance(r, dict)],
            printer=health.get("printer") if isinstance(health.get("printer"), dict) else None,
            queue=health.get("queue") if isinstance(health.get("queue"), dict) else None))
    return devices
