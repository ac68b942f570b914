"""Campaigns: who receives them (consent per channel, never the erased), the send log, sending
with throttling, unsubscribing, and the triggered messages.

Sending is at most once per log row: a row is claimed (``queued`` → ``sending``, committed)
before the message leaves, and marked ``sent`` or ``failed`` after. A crash in between
leaves it ``sending``: it is shown in the log, never sent again by itself; a manager (back
office) or ``flask campaigns stuck --release`` puts such rows back in the queue or marks
them failed, knowing that the message may have left. A failure worth retrying (a gateway's
5xx, a connection refused) is ``failed`` with ``retry`` set: the next run tries it again, up
to ``CAMPAIGN_MAX_ATTEMPTS``. The rate per channel is shared by every sender (``Pace``).
"""

from __future__ import annotations

import hmac
import logging
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import escape
from sqlalchemy import Select, and_, case, delete, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session

from server.api.problems import Problem
from server.campaigns import sms, templating
from server.campaigns.models import TRIGGERS, BirthdayDay, Campaign, CampaignMessage, SendPace
from server.customers.models import Customer
from server.db import UTCDateTime, utcnow
from server.loyalty.ledger import lot_reversal
from server.loyalty.models import PointsEntry
from server.mail.sender import MailError
from server.mail.sender import send as send_mail
from server.privacy import audit, consent
from server.privacy.models import Consent
from server.privacy.service import read_as_system
from server.secrets_file import app_secret_key
from server.vault.models import VaultRecord
from server.vault.service import find_customers

log = logging.getLogger(__name__)
ACTOR = "job:campaigns"
PURPOSE = {"email": "marketing_email", "sms": "marketing_sms"}
CONTACT = {"email": "email", "sms": "phone"}
# what the gateway may send back to stop text messages (compared without accents, upper case)
STOP_WORDS = {"STOP", "ARRET", "STOPSMS", "UNSUBSCRIBE", "ATSISAKYTI", "ATSAUKTI"}
# no visit for N days: only customers who crossed the line in the last this-many days, so
# that switching the trigger on does not write to everyone who left years ago
NO_VISIT_WINDOW = 30
DEFAULTS = {"SMS_URL": None, "SMS_TOKEN": None, "SMS_INBOUND_SECRET": None,
            "CAMPAIGN_EMAIL_PER_MINUTE": 120, "CAMPAIGN_SMS_PER_MINUTE": 60,
            "CAMPAIGN_MAX_ATTEMPTS": 3}


def setting(config, key: str):
    """A campaigns setting (``LOYALTY_<KEY>``), with its default."""
    value = config.get(key) or DEFAULTS[key]
    if key == "SMS_URL" and not value:
        return f"file:{config['INSTANCE_PATH']}/sms-outbox"
    return int(value) if key.startswith("CAMPAIGN_") else value


# --------------------------------------------------------------------------- campaigns


def create(main: Session, actor: str, *, name: str, channel: str, templates: dict,
           trigger: str | None = None, trigger_days: int | None = None) -> Campaign:
    """A draft one-off campaign, or a paused triggered one.

    Raises:
        Problem: ``validation-error`` with the template errors.
    """
    errors = templating.check_all(channel, templates)
    if channel not in PURPOSE:
        errors["channel"] = "email or sms"
    if trigger is not None and trigger not in TRIGGERS:
        errors["trigger"] = "unknown trigger"
    if errors:
        raise Problem("validation-error", "the templates are not usable", errors=[errors])
    campaign = Campaign(name=name, channel=channel, templates=templates, trigger=trigger,
                        trigger_days=trigger_days, created_by=actor,
                        status="paused" if trigger else "draft")
    main.add(campaign)
    main.flush()
    return campaign


def recipients(channel: str, target: Select | None = None) -> Select:
    """Customer ids of ``target`` (None: everyone) whose latest consent for the channel is
    yes; the erased never (``consent.consenting`` leaves them out)."""
    query = consent.consenting(PURPOSE[channel])
    if target is not None:
        query = query.where(Consent.customer_id.in_(target))
    return query


def count_recipients(main: Session, channel: str, target: Select | None = None) -> int:
    return main.scalar(select(func.count()).select_from(recipients(channel, target).subquery()))


def queue(main: Session, campaign: Campaign, target: Select | None = None, *,
          segment_id: int | None = None, definition: dict | None = None,
          now: datetime | None = None) -> int:
    """Put every consenting customer of ``target`` in the send log; returns how many.

    One INSERT … SELECT. Queuing again adds only who is not in the log yet.
    """
    if campaign.trigger:
        raise Problem("validation-error", "a triggered campaign is sent by its trigger")
    now = now or utcnow()
    m = CampaignMessage.__table__
    who = recipients(campaign.channel, target).subquery()
    already = exists().where(m.c.campaign_id == campaign.id, m.c.customer_id == who.c.customer_id,
                             m.c.channel == campaign.channel, m.c.trigger_key == "")
    rows = select(literal(campaign.id), who.c.customer_id, literal(campaign.channel),
                  literal(""), literal("queued"), literal(False), literal(0),
                  literal(now, UTCDateTime()), literal(now, UTCDateTime())).where(~already)
    def logged() -> int:
        return main.scalar(select(func.count()).where(m.c.campaign_id == campaign.id))

    before = logged()  # (rowcount of INSERT … SELECT is -1 through psycopg)
    main.execute(m.insert().from_select(
        ["campaign_id", "customer_id", "channel", "trigger_key", "status", "retry",
         "attempts", "created_at", "updated_at"], rows))
    added = logged() - before
    campaign.status = "queued"
    campaign.queued_at = campaign.queued_at or now
    if segment_id is not None or definition is not None:
        campaign.segment_id, campaign.segment_definition = segment_id, definition
    main.flush()
    return added


def log_counts(main: Session, campaign_id: int) -> dict[str, int]:
    """Messages of the campaign by status."""
    rows = main.execute(select(CampaignMessage.status, func.count())
                        .where(CampaignMessage.campaign_id == campaign_id)
                        .group_by(CampaignMessage.status)).all()
    counts = dict.fromkeys(("queued", "sending", "sent", "failed", "skipped"), 0)
    counts.update({status: n for status, n in rows})
    return counts


# --------------------------------------------------------------------------- interrupted sends

RELEASE_TO = ("pending", "failed")
# said wherever stuck messages are released: nobody can know whether the message left
MAY_HAVE_LEFT = ("a message left in 'sending' may have been delivered before the "
                 "interruption: releasing it to pending may send it a second time")


def stuck(main: Session, older_than: timedelta, now: datetime | None = None,
          limit: int = 500) -> list[CampaignMessage]:
    """Messages claimed (``sending``) more than ``older_than`` ago, oldest first: a sender
    that crashed or was killed between the claim and the outcome."""
    cutoff = (now or utcnow()) - older_than
    return list(main.scalars(select(CampaignMessage).where(
        CampaignMessage.status == "sending", CampaignMessage.updated_at < cutoff)
        .order_by(CampaignMessage.updated_at, CampaignMessage.id).limit(limit)))


def release(main: Session, actor: str, view: str, message_ids: list[int], to: str,
            older_than: timedelta, now: datetime | None = None) -> list[int]:
    """Release stuck messages: back to the queue (``pending``: the next run sends them, the
    attempt already made counts) or ``failed`` for good. Only rows still ``sending`` and
    claimed before ``older_than`` are touched (a sender that finished meanwhile wins);
    audited. Returns the ids released."""
    if to not in RELEASE_TO:
        raise ValueError(f"release to one of {RELEASE_TO}")
    now = now or utcnow()
    ids = sorted({int(i) for i in message_ids})
    if not ids:
        return []
    m = CampaignMessage
    reason = ("released after an interrupted send (may have been delivered)" if to == "pending"
              else "interrupted while sending (may have been delivered); released as failed")
    released = sorted(main.scalars(
        update(m).where(m.id.in_(ids), m.status == "sending", m.updated_at < now - older_than)
        .values(status="queued" if to == "pending" else "failed", retry=False, reason=reason,
                updated_at=now)
        .returning(m.id)))
    if not released:
        return []
    audit.record(main, actor, "campaign.release", None, view=view,
                 detail={"messages": released, "to": to,
                         "older_than_minutes": int(older_than.total_seconds() // 60)})
    log.warning("campaigns: %d stuck message(s) released to %s by %s", len(released), to,
                actor)
    return released


# --------------------------------------------------------------------------- unsubscribe


def _signer(app) -> URLSafeSerializer:
    return URLSafeSerializer(app_secret_key(app), salt="campaigns.unsubscribe")


def unsubscribe_url(app, customer_id: str) -> str:
    """A link that withdraws the customer's email consent, without a login; it never expires
    (an old newsletter's link must still work) and names the customer only by a signature."""
    token = _signer(app).dumps({"c": customer_id})
    return f"{app.config['CARD_BASE_URL']}/unsubscribe/{token}"


def customer_of_token(app, main: Session, token: str) -> Customer:
    """Raises ``Problem("not-found")`` for a forged or damaged link."""
    try:
        data = _signer(app).loads(token)
    except BadSignature:
        raise Problem("not-found") from None
    customer = main.get(Customer, data.get("c")) if isinstance(data, dict) else None
    if customer is None:
        raise Problem("not-found")
    return customer


def withdraw(main: Session, customer: Customer, channel: str, source: str, actor: str,
             view: str) -> bool:
    """Withdraw the channel's marketing consent (a new ledger row); False if it was off."""
    if customer.erased_at is not None:
        return False
    purpose = PURPOSE[channel]
    changed = consent.append(main, None, customer.id, {purpose: False}, version="withdrawal",
                             language=customer.language, channel=source)
    if changed:
        audit.record(main, actor, "consent.change", customer.id, view=view,
                     detail={"changed": changed, "channel": source})
    return bool(changed)


def _plain_word(text: str) -> str:
    word = (text or "").strip().split()[0] if (text or "").strip() else ""
    word = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
    return word.upper().strip(".!")


def inbound_sms(main: Session, vault: Session, config, sender: str, text: str) -> dict:
    """A text message from a customer, passed on by the gateway: a stop word withdraws the
    SMS consent of every customer with that number."""
    if _plain_word(text) not in STOP_WORDS:
        return {"stop": False, "withdrawn": 0}
    ids = find_customers(vault, phone=sender, country=config["DEFAULT_COUNTRY"])
    audit.record(main, "sms-gateway", "personal-data.search", None, view="sms:inbound",
                 detail={"by": ["phone"], "found": ids})
    withdrawn = 0
    for customer in main.scalars(select(Customer).where(Customer.id.in_(ids))):
        withdrawn += withdraw(main, customer, "sms", "sms keyword", "sms-gateway",
                              "sms:inbound")
    return {"stop": True, "withdrawn": withdrawn}


# --------------------------------------------------------------------------- sending


class Pace:
    """At most ``per_minute`` messages a minute on one channel, evenly spaced, across every
    process and node that shares the database.

    The ``send_pace`` row of the channel holds the next free slot (Unix time). Taking one is
    one conditional UPDATE: the slot is ``max(next_at, now)`` and ``next_at`` moves on by one
    interval, under the row's lock, so two senders never get the same slot and any minute
    holds at most ``per_minute`` of them. The sender then sleeps until its slot. Slots are
    wall-clock times: the nodes' clocks are kept by NTP, as the tokens' and tickets' times
    already assume. A sender that dies holding a slot only leaves it unused.
    """

    def __init__(self, engine, channel: str, per_minute: int, clock=time.time,
                 sleep=time.sleep) -> None:
        self.engine, self.channel = engine, channel
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.clock, self.sleep = clock, sleep

    def take(self) -> float:
        """Reserve the next slot of the channel; returns its time."""
        t = SendPace.__table__
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(_insert_or_ignore(conn, t, {"channel": self.channel, "next_at": 0.0}))
            after = conn.scalar(
                update(t).where(t.c.channel == self.channel)
                .values(next_at=case((t.c.next_at > now, t.c.next_at), else_=now)
                        + self.interval)
                .returning(t.c.next_at))
        return after - self.interval

    def wait(self) -> None:
        """Wait for this process's next slot on the channel."""
        if not self.interval:
            return
        pause = self.take() - self.clock()
        if pause > 0:
            self.sleep(pause)


def _insert_or_ignore(conn, table, row: dict):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).values(row).on_conflict_do_nothing()


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0  # of which some will be retried
    skipped: int = 0
    by_campaign: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "skipped": self.skipped}


def _due(max_attempts: int):
    m = CampaignMessage
    return or_(m.status == "queued",
               and_(m.status == "failed", m.retry.is_(True), m.attempts < max_attempts))


# added under a message whose template did not place the link itself: every email has one
UNSUBSCRIBE_FOOTER = {"fr": "Pour ne plus recevoir nos offres par e-mail : {url}",
                      "lt": "Jei nebenorite gauti mūsų pasiūlymų el. paštu: {url}",
                      "en": "To stop receiving our offers by email: {url}"}


def _with_unsubscribe(parts: dict, language: str, url: str) -> dict:
    parts = dict(parts)
    footer = UNSUBSCRIBE_FOOTER.get(language, UNSUBSCRIBE_FOOTER["en"])
    if url not in parts.get("text", ""):
        parts["text"] = parts.get("text", "").rstrip("\n") + "\n\n-- \n" + \
            footer.format(url=url) + "\n"
    if parts.get("html") and escape(url) not in parts["html"]:
        label = escape(footer.format(url="").rstrip(": "))
        parts["html"] += f'\n<p><a href="{escape(url)}">{label}</a></p>'
    return parts


def _email(app, config, to: str, parts: dict, language: str, unsubscribe: str
           ) -> EmailMessage:
    sender = config["MAIL_FROM"]
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = parts.get("subject", "").replace("\n", " ").strip()
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    # RFC 2369 and RFC 8058: mail clients show "unsubscribe" and post to it in one click
    msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    parts = _with_unsubscribe(parts, language, unsubscribe)
    msg.set_content(parts.get("text", ""))
    if parts.get("html"):
        msg.add_alternative(parts["html"], subtype="html")
    msg["Content-Language"] = language
    return msg


def _send_one(app, dbs, config, message_id: int, max_attempts: int, report: SendReport,
              transport, paces: dict[str, Pace]) -> None:
    now = utcnow()
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        claimed = main.execute(update(CampaignMessage).where(
            CampaignMessage.id == message_id, _due(max_attempts))
            .values(status="sending", attempts=CampaignMessage.attempts + 1, updated_at=now))
        if claimed.rowcount != 1:
            main.rollback()
            return  # another run has it
        msg = main.get(CampaignMessage, message_id)
        campaign = main.get(Campaign, msg.campaign_id)
        customer = main.get(Customer, msg.customer_id)

        def skip(reason: str) -> None:
            msg.status, msg.reason, msg.retry = "skipped", reason, False
            main.commit()
            report.skipped += 1

        if customer.erased_at is not None:
            return skip("erased")
        if not consent.flags(main, customer.id)[PURPOSE[msg.channel]]:
            return skip("no consent (withdrawn since queued)")
        contact_field = CONTACT[msg.channel]
        personal = read_as_system(main, vault, ACTOR, customer.id, f"campaign:{campaign.id}",
                                  (contact_field, "first_name"))
        if not personal.get(contact_field):
            return skip(f"no {contact_field}")
        values = {"first_name": personal.get("first_name") or "", "points": customer.points,
                  "tier": customer.tier, "customer_code": customer.id,
                  "unsubscribe_url": unsubscribe_url(app, customer.id)}
        language, parts = templating.render(campaign.templates, customer.language, values)
        # the claim and the audit entry are committed before anything leaves: the audit
        # chain's lock is not held while a server answers
        main.commit()
        paces[msg.channel].wait()  # the channel's next slot, shared with every other sender

        provider_id, error, temporary = None, None, False
        try:
            if msg.channel == "email":
                send_mail(config["MAIL_URL"], _email(app, config, personal["email"], parts,
                                                     language, values["unsubscribe_url"]))
            else:
                provider_id = transport.send(personal["phone"], parts.get("text", ""))
        except MailError as exc:
            # a refused recipient will be refused again; anything else may pass later
            error, temporary = f"mail not sent ({exc})", "Recipients" not in str(exc)
        except sms.SmsError as exc:
            error, temporary = str(exc), exc.temporary
        done = utcnow()
        if error is None:
            main.execute(update(CampaignMessage).where(CampaignMessage.id == message_id).values(
                status="sent", reason=None, retry=False, provider_id=provider_id,
                sent_at=done, updated_at=done))
            report.sent += 1
        else:
            main.execute(update(CampaignMessage).where(CampaignMessage.id == message_id).values(
                status="failed", reason=error[:200], retry=temporary, updated_at=done))
            report.failed += 1
        main.commit()


def process(app, campaign_ids: list[int] | None = None, *, sleep=time.sleep,
            clock=time.time) -> SendReport:
    """Send every message due (queued, or failed and worth retrying), oldest first, at each
    channel's rate. Safe to run again, and alongside other runs on any node: the rate is
    the database's (``Pace``), not this process's."""
    config = app.config
    dbs = app.extensions["loyalty.db"]
    max_attempts = setting(config, "CAMPAIGN_MAX_ATTEMPTS")
    paces = {channel: Pace(dbs.main, channel,
                           setting(config, f"CAMPAIGN_{channel.upper()}_PER_MINUTE"),
                           clock, sleep) for channel in PURPOSE}
    transport = sms.adapter(setting(config, "SMS_URL"), setting(config, "SMS_TOKEN"))
    query = (select(CampaignMessage.id, CampaignMessage.channel)
             .join(Campaign, Campaign.id == CampaignMessage.campaign_id)
             .where(_due(max_attempts), Campaign.status.in_(("queued", "active")))
             .order_by(CampaignMessage.id))
    if campaign_ids is not None:
        query = query.where(CampaignMessage.campaign_id.in_(campaign_ids))
    with Session(dbs.main) as main:
        due = main.execute(query).all()
    report = SendReport()
    with app.app_context():  # the vault's and the audit log's keys are the app's
        for message_id, _channel in due:
            _send_one(app, dbs, config, message_id, max_attempts, report, transport, paces)
    log.info("campaigns: %s", report.as_dict())
    return report


# --------------------------------------------------------------------------- triggers


def _insert_ignore(main: Session, rows: list[dict]) -> int:
    if not rows:
        return 0
    if main.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    done = main.execute(insert(CampaignMessage.__table__).values(rows).on_conflict_do_nothing())
    return max(done.rowcount, 0)


def refresh_birthdays(app, now: datetime) -> int:
    """Keep ``campaign_birthdays`` to the customers consenting to email or SMS marketing:
    forget the others, read the vault once (audited) for newcomers and for those whose
    personal data changed since. Returns the vault reads made."""
    dbs = app.extensions["loyalty.db"]
    with Session(dbs.main) as main, Session(dbs.vault) as vault:
        main.execute(delete(BirthdayDay).where(
            BirthdayDay.customer_id.not_in(consent.consenting("marketing_email")),
            BirthdayDay.customer_id.not_in(consent.consenting("marketing_sms"))))
        since = main.scalar(select(func.max(BirthdayDay.checked_at)))
        if since is not None:  # rectified since the last look: read again
            changed = list(vault.scalars(select(VaultRecord.customer_id)
                                         .where(VaultRecord.updated_at > since)))
            for start in range(0, len(changed), 500):
                main.execute(delete(BirthdayDay).where(
                    BirthdayDay.customer_id.in_(changed[start:start + 500])))
        missing = list(main.scalars(
            select(Customer.id).where(
                or_(Customer.id.in_(consent.consenting("marketing_email")),
                    Customer.id.in_(consent.consenting("marketing_sms"))),
                ~exists().where(BirthdayDay.customer_id == Customer.id))
            .order_by(Customer.id)))
        for i, customer_id in enumerate(missing, 1):
            birth = read_as_system(main, vault, ACTOR, customer_id, "campaigns:birthday",
                                   ("birth_date",))["birth_date"]
            main.add(BirthdayDay(customer_id=customer_id,
                                 month_day=birth[5:10] if birth else None,
                                 checked_at=utcnow()))  # compared with the vault's clock
            if i % 200 == 0:
                main.commit()
        main.commit()
    return len(missing)


def _candidates(main: Session, campaign: Campaign, now: datetime) -> list[tuple[str, str]]:
    """``(customer_id, trigger key)`` of who the trigger fires for today, among those who
    consent to the campaign's channel (in SQL: the consenting are not loaded)."""
    days = campaign.trigger_days
    allowed = recipients(campaign.channel)
    if campaign.trigger == "welcome":
        since = now - timedelta(days=days or 2)
        return [(cid, "welcome") for cid in main.scalars(
            select(Customer.id).where(Customer.created_at >= since,
                                      Customer.id.in_(allowed)))]
    if campaign.trigger == "birthday":
        today = now.date()
        days_of = [today.strftime("%m-%d")]
        if days_of[0] == "02-28" and (today + timedelta(days=1)).day == 1:
            days_of.append("02-29")  # born on 29 February: the 28th in other years
        return [(cid, f"birthday:{today.year}") for cid in main.scalars(
            select(BirthdayDay.customer_id).where(BirthdayDay.month_day.in_(days_of),
                                                  BirthdayDay.customer_id.in_(allowed)))]
    if campaign.trigger == "points_expiring":
        # the points of lots expiring within N days that spending has not consumed (the same
        # sums as server.loyalty.jobs.expire_points, with the horizon moved)
        e = PointsEntry.__table__
        horizon = now + timedelta(days=days or 30)
        reversal = lot_reversal(e)
        due = func.sum(func.coalesce(_case(e.c.expires_at.is_not(None)
                                           & (e.c.expires_at <= horizon)
                                           & ((e.c.delta > 0) | reversal), e.c.delta), 0))
        debits = -func.sum(func.coalesce(_case((e.c.delta < 0) & ~reversal, e.c.delta), 0))
        first = func.min(_case((e.c.delta > 0) & (e.c.expires_at > now)
                               & (e.c.expires_at <= horizon), e.c.expires_at))
        rows = main.execute(select(e.c.customer_id, first.label("first"))
                            .where(e.c.customer_id.in_(allowed))
                            .group_by(e.c.customer_id).having(due > debits)).all()
        return [(r.customer_id, f"expiring:{_day(r.first)}") for r in rows if r.first]
    if campaign.trigger == "no_visit":
        from server.privacy.retention import last_activity

        days = days or 60
        inner = (select(Customer.id, last_activity().label("last"))
                 .where(Customer.erased_at.is_(None), Customer.id.in_(allowed)).subquery())
        rows = main.execute(select(inner.c.id, inner.c.last).where(
            inner.c.last < now - timedelta(days=days),
            inner.c.last >= now - timedelta(days=days + NO_VISIT_WINDOW))).all()
        return [(r.id, f"no_visit:{_day(r.last)}") for r in rows]
    raise ValueError(campaign.trigger)


def _case(condition, value):
    from sqlalchemy import case

    return case((condition, value))


def _day(value) -> str:
    if isinstance(value, str):  # SQLite may answer MIN() over a timestamp as text
        return value[:10]
    return value.date().isoformat()


def run_triggers(app, now: datetime | None = None, *, sleep=time.sleep) -> dict:
    """The daily job: queue what each active trigger fires for, then send. Safe to run
    twice: the trigger key (``birthday:2026``) is in the send log's unique key."""
    now = now or utcnow()
    dbs = app.extensions["loyalty.db"]
    with app.app_context():
        read = refresh_birthdays(app, now)
    queued = {}
    with Session(dbs.main) as main:
        active = list(main.scalars(select(Campaign).where(
            Campaign.trigger.is_not(None), Campaign.status == "active").order_by(Campaign.id)))
        for campaign in active:
            rows = [{"campaign_id": campaign.id, "customer_id": cid,
                     "channel": campaign.channel, "trigger_key": key, "status": "queued",
                     "retry": False, "attempts": 0, "created_at": now, "updated_at": now}
                    for cid, key in _candidates(main, campaign, now)]
            count = 0
            for start in range(0, len(rows), 500):
                count += _insert_ignore(main, rows[start:start + 500])
            queued[campaign.id] = count
        main.commit()
    ids = list(queued)
    report = process(app, ids, sleep=sleep) if ids else SendReport()
    return {"birthdays_read": read, "queued": queued, **report.as_dict()}


def secret_matches(given: str | None, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest((given or "").encode(), secret.encode())
