"""The audit log: who read or changed whose personal data, in which view; hash-chained.

Every entry gets the next sequence number and ``hash = HMAC(key, prev_hash + entry)``. The key
is in a file outside the database (``AUDIT_KEY_FILE``), so someone who can write the database
but not read that file cannot alter, remove or insert an entry without ``verify`` noticing.
Database triggers refuse UPDATE and DELETE on the table besides (migration 0005).

Appends are ordered by the single ``audit_head`` row: the UPDATE that takes the next number
locks it until the request commits. Call ``record`` as the last write of a request, after any
other row locks, so two requests never wait on each other in opposite orders.

Till displays (a tap shows the first name and initial) are not entered here: each one is a
visit row already, with its device and time. See docs/PRIVACY.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db import utcnow
from server.privacy.models import AuditEntry, AuditHead
from server.secrets_file import load_or_create_json

GENESIS = "0" * 64


def _key() -> bytes:
    key = current_app.extensions.get("loyalty.audit_key")
    if key is None:
        data = load_or_create_json(current_app.config["AUDIT_KEY_FILE"],
                                   lambda: {"key": secrets.token_hex(32)})
        key = current_app.extensions["loyalty.audit_key"] = bytes.fromhex(data["key"])
    return key


def _digest(key: bytes, prev_hash: str, seq: int, at: datetime, actor: str, action: str,
            customer_id: str | None, view: str | None, detail: dict | None) -> str:
    body = json.dumps([seq, at.isoformat(timespec="microseconds"), actor, action, customer_id,
                       view, detail], separators=(",", ":"), sort_keys=True, default=str)
    return hmac.new(key, (prev_hash + body).encode(), hashlib.sha256).hexdigest()


def record(session: Session, actor: str, action: str, customer_id: str | None = None,
           view: str | None = None, detail: dict | None = None) -> AuditEntry:
    """Append one entry to the chain, in the session's transaction.

    ``detail`` must never hold personal data: name the fields, not their values.
    """
    session.flush()
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(seq=AuditHead.seq + 1))
    seq, prev = session.execute(select(AuditHead.seq, AuditHead.hash)
                                .where(AuditHead.id == 1)).one()
    at = utcnow()
    digest = _digest(_key(), prev, seq, at, actor, action, customer_id, view, detail)
    entry = AuditEntry(seq=seq, at=at, actor=actor, action=action, customer_id=customer_id,
                       view=view, detail=detail, prev_hash=prev, hash=digest)
    session.add(entry)
    session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=digest))
    return entry


@dataclass
class ChainReport:
    ok: bool
    entries: int  # chained entries checked
    legacy: int  # entries written before the chain existed (migration 0005)
    head_seq: int
    broken_at: int | None = None  # the first entry id that does not verify
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "legacy": self.legacy,
                "head_seq": self.head_seq, "broken_at": self.broken_at, "reason": self.reason}


def verify(session: Session, batch: int = 5000) -> ChainReport:
    """Recompute the whole chain; report the first entry that does not verify."""
    key = _key()
    head_seq, head_hash = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    prev, expected_seq, count, legacy = GENESIS, 1, 0, 0
    chained_started = False
    last_id = 0
    cols = (AuditEntry.id, AuditEntry.seq, AuditEntry.at, AuditEntry.actor, AuditEntry.action,
            AuditEntry.customer_id, AuditEntry.view, AuditEntry.detail, AuditEntry.prev_hash,
            AuditEntry.hash)

    def broken(entry_id: int, reason: str) -> ChainReport:
        return ChainReport(False, count, legacy, head_seq, entry_id, reason)

    while True:
        rows = session.execute(select(*cols).where(AuditEntry.id > last_id)
                               .order_by(AuditEntry.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            last_id = row.id
            if row.seq is None:
                if chained_started:
                    return broken(row.id, "an entry without a place in the chain")
                legacy += 1
                continue
            chained_started = True
            if row.seq != expected_seq:
                return broken(row.id, f"sequence {row.seq} where {expected_seq} was expected "
                                      "(an entry was removed or inserted)")
            if row.prev_hash != prev:
                return broken(row.id, "does not follow the entry before it")
            digest = _digest(key, prev, row.seq, row.at, row.actor, row.action,
                             row.customer_id, row.view, row.detail)
            if not hmac.compare_digest(digest, row.hash or ""):
                return broken(row.id, "the entry was altered")
            prev, expected_seq, count = digest, expected_seq + 1, count + 1
    if count != head_seq or prev != (head_hash if count else GENESIS):
        return ChainReport(False, count, legacy, head_seq, None,
                           f"the chain ends at {count} but its head says {head_seq} "
                           "(entries were removed from the end)")
    return ChainReport(True, count, legacy, head_seq)
