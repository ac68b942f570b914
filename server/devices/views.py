"""POST /api/v1/devices/heartbeat: a kiosk or till says it is alive, how its readers are (and
a kiosk's card writer and printer)."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint, g, jsonify
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import update

from server.api.body import parse_body
from server.db import main_session, utcnow
from server.devices.auth import require
from server.devices.models import Device

bp = Blueprint("devices", __name__)


class ReaderHealth(BaseModel):
    model_config = ConfigDict(extra="ignore")  # an older server accepts a newer agent

    uri: Annotated[str, StringConstraints(max_length=200)]
    status: Literal["starting", "ready", "failed"]
    error: Annotated[str, StringConstraints(max_length=500)] | None = None
    taps: int = Field(default=0, ge=0)


class QueueHealth(BaseModel):
    model_config = ConfigDict(extra="ignore")

    depth: int = Field(ge=0, description="Events waiting for the service")
    failed: int = Field(default=0, ge=0, description="Queued events the service refused")


class PrinterHealth(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uri: Annotated[str, StringConstraints(max_length=200)]
    status: Literal["ready", "paper-out", "offline", "failed", "unknown"]
    error: Annotated[str, StringConstraints(max_length=500)] | None = None


class HeartbeatIn(BaseModel):
    """What a device reports every 30 s or so. Not an event: a repeat only refreshes it."""

    model_config = ConfigDict(extra="ignore")

    readers: list[ReaderHealth] = Field(default_factory=list, max_length=32)
    queue: QueueHealth | None = None
    printer: PrinterHealth | None = Field(default=None, description="A kiosk's printer")


class HeartbeatOut(BaseModel):
    device_id: int
    last_seen_at: str


@bp.post("/devices/heartbeat")
@require("till", "kiosk")
def heartbeat():
    """Store when the device was last seen and what it said (one UPDATE by primary key)."""
    req = parse_body(HeartbeatIn)
    now = utcnow()
    main_session().execute(
        update(Device).where(Device.id == g.principal.id)
        .values(last_seen_at=now, health=req.model_dump(mode="json")))
    return jsonify({"device_id": g.principal.id, "last_seen_at": now.isoformat()})
