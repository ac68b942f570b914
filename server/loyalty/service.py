"""Purchases, returns, redemptions and adjustments: the loyalty rules applied to the ledger.

Each function takes the request's main session, the caller and a validated request, writes
through ``ledger.post`` and returns the answer; the view commits. Each is idempotent on the
request's ``event_id``: the replay of a recorded event returns the recorded result.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.api.problems import Problem
from server.cards.service import active_card
from server.customers.models import Customer
from server.db import flush_or_replay
from server.devices.auth import Principal, verify_password
from server.hotsql import Prepared
from server.loyalty import ledger, programmes
from server.loyalty.models import (
    PointsEntry,
    Purchase,
    PurchaseLine,
    Redemption,
    Refund,
    RefundLine,
)
from server.loyalty.programme import (
    LineIn,
    ProgrammeError,
    earn,
    expiry_date,
    needs_step_up,
    reward_allowed,
    tier_change,
    window_start,
)
from server.loyalty.schemas import (
    AdjustmentIn,
    CustomerRef,
    PurchaseIn,
    RedemptionIn,
    RefundIn,
    cents,
    milli,
)
from server.stores.models import Store

customers = Customer.__table__
FUTURE_TOLERANCE = timedelta(minutes=10)


def _customer(main: Session, ref: CustomerRef) -> tuple[Customer, str | None]:
    """The customer and the card used, if any (balances move only through ``ledger.post``)."""
    card_id = None
    customer_id = ref.customer_id
    if ref.card:
        row = active_card(main, ref.card)
        customer_id, card_id = row.customer_id, row.id
    customer = main.scalar(select(Customer).where(Customer.id == customer_id))
    if customer is None:
        raise Problem("customer-not-found")
    if customer.erased_at is not None:  # their cards are revoked; the id alone is not enough
        raise Problem("customer-erased")
    return customer, card_id


def _store(main: Session, device: Principal, code: str | None) -> Store:
    store = main.get(Store, device.store_id)
    if code and code != store.code:
        raise Problem("store-mismatch", f"this till belongs to store {store.code}, not {code}")
    return store


_SET_TIER = Prepared(update(customers).where(customers.c.id == bindparam("customer_id"))
                     .values(tier=bindparam("tier"), tier_review_at=bindparam("review_at")))
_DEBT = Prepared(select(customers.c.points_debt)
                 .where(customers.c.id == bindparam("customer_id")))
_LOCK = Prepared(select(customers.c.id).where(customers.c.id == bindparam("customer_id"))
                 .with_for_update(key_share=True))


def lock_customer(main: Session, customer_id: str) -> None:
    """Take the customer's row for the rest of the transaction (PostgreSQL: ``FOR NO KEY
    UPDATE``; SQLite: a plain read, its one write lock serializes writers anyway).

    The lock order of docs/ARCHITECTURE.md: a write for one customer takes their row before
    any row of the report aggregates, which its triggers update (``customer_days``,
    ``sales_days``...)."""
    _LOCK.scalar(main, customer_id=customer_id)


def update_tier(main: Session, customer: Customer, now: datetime) -> bool:
    """Recompute the tier from qualifying points: up at once, down only at the review date."""
    tier, review_at = settle_tier(main, customer.id, customer.tier, customer.tier_review_at,
                                  now)
    changed = tier != customer.tier
    # written in SQL; the object only learns the value (nothing left to flush)
    set_committed_value(customer, "tier", tier)
    set_committed_value(customer, "tier_review_at", review_at)
    return changed


def settle_tier(main: Session, customer_id: str, tier: str, review_at: datetime | None,
                now: datetime) -> tuple[str, datetime | None]:
    """``update_tier`` for a customer known by their row's values: the new tier and review
    date, written whether or not they changed. The write matters on SQLite: a purchase's
    first write, it takes the file's write lock before the checks that follow (the credit
    on account, the rewards), so two tills cannot both pass them."""
    _, programme = programmes.current(main)
    qualifying = ledger.qualifying_points(main, customer_id, window_start(programme, now))
    new_tier, new_review = tier_change(programme, current=tier, qualifying_points=qualifying,
                                       at=now, review_at=review_at)
    _SET_TIER.run(main, customer_id=customer_id, tier=new_tier, review_at=new_review)
    return new_tier, new_review


def _replay(main: Session, device: Principal, model, event_id: str, result) -> dict | None:
    """The recorded result of an event id already used by this device, or ``None``.

    Raises:
        Problem: ``event-id-conflict`` if another device used it.
    """
    row = main.scalar(select(model).where(model.event_id == event_id))
    if row is None:
        return None
    if row.device_id != device.id:
        raise Problem("event-id-conflict")
    return result(main, row)


SETTLES_DEBT = "settles points a return took back after they were spent"


def credit(main: Session, customer_id: str, points: int, kind: str, *, expires_at,
           reason: str | None = None, **refs) -> int:
    """Add earned points, paying first what returns took back that was already spent."""
    ledger.post(main, customer_id, points, kind, reason=reason, expires_at=expires_at, **refs)
    debt = _DEBT.scalar(main, customer_id=customer_id)
    settle = min(debt or 0, points)
    if settle:
        # taken from the lot just credited (its expiry date says which)
        ledger.post(main, customer_id, -settle, "refund", expires_at=expires_at,
                    reason=SETTLES_DEBT, **refs)
        main.execute(update(customers).where(customers.c.id == customer_id)
                     .values(points_debt=customers.c.points_debt - settle))
    return points - settle


# -- purchases ------------------------------------------------------------------------------

def _purchase_result(main: Session, purchase: Purchase, *, tier_changed: bool = False) -> dict:
    lines = main.scalars(select(PurchaseLine).where(PurchaseLine.purchase_id == purchase.id)
                         .order_by(PurchaseLine.line_no)).all()
    tier, language = main.execute(select(customers.c.tier, customers.c.language)
                                  .where(customers.c.id == purchase.customer_id)).one()
    return {
        "purchase_id": purchase.id,
        "customer_id": purchase.customer_id,
        "points_earned": purchase.points_earned,
        "lines": [{"line_no": line.line_no, "points": line.points_earned,
                   "reasons": line.reasons or []} for line in lines],
        "balance": ledger.balance(main, purchase.customer_id),  # now, on a replay too
        "tier": tier,
        "tier_name": programmes.current(main)[1].tier_name(tier, language),
        "tier_changed": tier_changed,
    }


def _replay_purchase(main: Session, device: Principal, event_id: str) -> dict | None:
    return _replay(main, device, Purchase, event_id, _purchase_result)


def record_purchase(main: Session, device: Principal, req: PurchaseIn) -> tuple[dict, bool]:
    """Record a purchase and the points each line earns.

    Raises:
        Problem: customer or card problems, ``currency-mismatch``, ``store-mismatch``,
            ``total-mismatch``, ``reward-used``, ``event-id-conflict``.
    """
    event_id = str(req.event_id)
    previous = _replay_purchase(main, device, event_id)
    if previous is not None:
        return previous, False
    _, programme = programmes.current(main)
    if req.currency != programme.currency:
        raise Problem("currency-mismatch", f"the programme runs in {programme.currency}")
    now = datetime.now(UTC)
    if req.paid_at > now + FUTURE_TOLERANCE:
        raise Problem("validation-error", "paid_at is in the future",
                      errors=[{"field": "paid_at", "message": "in the future"}])
    store = _store(main, device, req.store)
    customer, card_id = _customer(main, req)
    # a review that is due (or a tier a new programme version removed) applies before earning
    update_tier(main, customer, now)

    nets = [cents(line.quantity * line.unit_price) - cents(line.discount) for line in req.lines]
    if sum(nets) != cents(req.total):
        raise Problem("total-mismatch", f"the lines add up to {Decimal(sum(nets)) / 100:.2f}")
    _check_rewards(main, customer.id, req)
    if req.on_account:
        from server.accounts.service import check_charge

        check_charge(main, customer.id, cents(req.total))

    earned = earn(programme, [
        LineIn(line_no=line.line_no, sku=line.sku, category=line.category,
               quantity=line.quantity, unit_price=line.unit_price, discount=line.discount,
               paid_with_reward=line.redemption_id is not None)
        for line in req.lines], store=store.code, paid_at=req.paid_at, tier=customer.tier)
    points = {e.line_no: e.points for e in earned}
    reasons = {e.line_no: list(e.reasons) for e in earned}

    purchase = Purchase(event_id=event_id, customer_id=customer.id, card_id=card_id,
                        store_id=store.id, device_id=device.id, till=req.till, seller=req.seller,
                        receipt=req.receipt, currency=req.currency, total_cents=cents(req.total),
                        points_earned=sum(points.values()), paid_at=req.paid_at,
                        payment="account" if req.on_account else None)
    main.add(purchase)
    # claims the event id
    previous = flush_or_replay(main, lambda: _replay_purchase(main, device, event_id))
    if previous is not None:
        return previous, False
    for line, net in zip(req.lines, nets, strict=True):
        main.add(PurchaseLine(
            purchase_id=purchase.id, line_no=line.line_no, sku=line.sku, name=line.name,
            category=line.category, quantity_milli=milli(line.quantity),
            unit_price_cents=cents(line.unit_price), discount_cents=cents(line.discount),
            net_cents=net, redemption_id=line.redemption_id,
            points_earned=points[line.line_no], reasons=reasons[line.line_no]))
    main.flush()
    if purchase.points_earned:
        # dated when earned, not when recorded: a purchase a till sends late (offline) counts
        # in the tier window of the day it was paid
        credit(main, customer.id, purchase.points_earned, "earn", at=req.paid_at,
               expires_at=expiry_date(programme, req.paid_at), store_id=store.id,
               purchase_id=purchase.id, device_id=device.id,
               reason=_why(req.receipt or purchase.id, earned))
    tier_changed = update_tier(main, customer, now)
    main.flush()
    return _purchase_result(main, purchase, tier_changed=tier_changed), True


def _why(receipt, earned) -> str:
    """The ledger's reason for a purchase's points: the receipt and the rules that applied."""
    rules = sorted({r for e in earned if e.points for r in e.reasons})
    text = f"purchase {receipt}" + (f": {'; '.join(rules)}" if rules else "")
    return text if len(text) <= 300 else text[:297] + "..."


def _check_rewards(main: Session, customer_id: str, req: PurchaseIn) -> None:
    """Each line paid with a reward names an unused reward of this customer."""
    ids = [line.redemption_id for line in req.lines if line.redemption_id is not None]
    if len(set(ids)) != len(ids):
        raise Problem("reward-used", "one reward pays for one line")
    for redemption_id in ids:
        redemption = main.get(Redemption, redemption_id)
        if redemption is None or redemption.customer_id != customer_id:
            raise Problem("reward-not-found", f"no reward {redemption_id} for this customer")
        used = main.scalar(select(PurchaseLine.id)
                           .where(PurchaseLine.redemption_id == redemption_id))
        if redemption.status != "active" or used is not None:
            raise Problem("reward-used", f"reward {redemption_id} has already been used")


# -- returns --------------------------------------------------------------------------------

def _refund_result(main: Session, refund: Refund) -> dict:
    purchase = main.get(Purchase, refund.purchase_id)
    return {
        "refund_id": refund.id,
        "purchase_id": refund.purchase_id,
        "customer_id": purchase.customer_id,
        "amount": f"{Decimal(refund.amount_cents) / 100:.2f}",
        "points_reversed": refund.points_reversed,
        "points_restored": refund.points_restored,
        "points_owed": refund.shortfall,
        "balance": ledger.balance(main, purchase.customer_id),
    }


def _replay_refund(main: Session, device: Principal, event_id: str) -> dict | None:
    return _replay(main, device, Refund, event_id, _refund_result)


def _share(total: int, done_qty: int, qty: int, already: int) -> int:
    """What a return of part of a line takes back, so that the parts add up to the whole."""
    return total * done_qty // qty - already


def record_refund(main: Session, device: Principal, req: RefundIn) -> tuple[dict, bool]:
    """Take back exactly the points the returned lines earned; give back their rewards.

    Points already spent are taken as far as the balance allows; the rest is owed and paid
    from the customer's next earnings (the answer says how much, so the till can tell them).

    Raises:
        Problem: ``purchase-not-found``, ``already-refunded``, ``event-id-conflict``.
    """
    event_id = str(req.event_id)
    previous = _replay_refund(main, device, event_id)
    if previous is not None:
        return previous, False
    query = select(Purchase)
    query = query.where(Purchase.id == req.purchase_id) if req.purchase_id is not None else \
        query.where(Purchase.event_id == str(req.purchase_event_id))
    purchase = main.scalar(query)
    if purchase is None:
        raise Problem("purchase-not-found")
    # the customer's row before anything else, as a purchase takes it (PostgreSQL): the
    # refund's triggers update the customer's day and the day's sales, which a purchase of the
    # same customer updates after taking the row; the other way round is a deadlock
    lock_customer(main, purchase.customer_id)
    # claim the event id first: this write also takes SQLite's write lock, so the lines read
    # below are the current ones (PostgreSQL locks them with FOR UPDATE); read before it, two
    # tills returning the same line at once would both reverse its points
    refund = Refund(event_id=event_id, purchase_id=purchase.id, device_id=device.id,
                    amount_cents=0, points_reversed=0)
    main.add(refund)
    previous = flush_or_replay(main, lambda: _replay_refund(main, device, event_id))
    if previous is not None:
        return previous, False

    lines = {line.line_no: line for line in main.scalars(
        select(PurchaseLine).where(PurchaseLine.purchase_id == purchase.id)
        .with_for_update())}
    if req.lines is None:
        wanted = {no: line.quantity_milli - line.refunded_milli for no, line in lines.items()
                  if line.quantity_milli > line.refunded_milli}
    else:
        wanted = {}
        for item in req.lines:
            if item.line_no not in lines:
                raise Problem("validation-error", f"the purchase has no line {item.line_no}",
                              errors=[{"field": "lines", "message": "unknown line_no"}])
            wanted[item.line_no] = wanted.get(item.line_no, 0) + milli(item.quantity)
    if not wanted:
        raise Problem("already-refunded", "everything on this purchase was returned already")
    for no, qty in wanted.items():
        line = lines[no]
        if line.refunded_milli + qty > line.quantity_milli:
            raise Problem("already-refunded",
                          f"line {no}: {(line.quantity_milli - line.refunded_milli) / 1000:g} "
                          "left to return", line_no=no)

    reversed_total, amount, restore = 0, 0, []
    for no, qty in sorted(wanted.items()):
        line = lines[no]
        done = line.refunded_milli + qty
        points = _share(line.points_earned, done, line.quantity_milli, line.points_reversed)
        money = line.net_cents * done // line.quantity_milli - \
            line.net_cents * line.refunded_milli // line.quantity_milli
        line.refunded_milli, line.points_reversed = done, line.points_reversed + points
        main.add(RefundLine(refund_id=refund.id, line_id=line.id, quantity_milli=qty,
                            amount_cents=money, points_reversed=points))
        reversed_total, amount = reversed_total + points, amount + money
        if line.redemption_id is not None and done == line.quantity_milli:
            restore.append(line.redemption_id)

    restored = 0
    for redemption_id in restore:
        redemption = main.get(Redemption, redemption_id, with_for_update=True)
        if redemption.status == "active":
            redemption.status = "restored"
            ledger.post(main, purchase.customer_id, redemption.points, "restore",
                        reason=f"reward {redemption.reward_code} given back with a return",
                        redemption_id=redemption.id, refund_id=refund.id, device_id=device.id)
            restored += redemption.points
    # the balance read under the customer's row lock (PostgreSQL): a redemption at another
    # till in the meantime must not make the return fail with insufficient-points
    balance = main.scalar(select(customers.c.points)
                          .where(customers.c.id == purchase.customer_id)
                          .with_for_update(key_share=True))
    taken = min(reversed_total, balance)
    if taken:
        # the reversal reduces the lot the purchase earned, whatever its age, not the oldest
        lot_expiry = main.scalar(select(PointsEntry.expires_at).where(
            PointsEntry.purchase_id == purchase.id, PointsEntry.kind == "earn").limit(1))
        ledger.post(main, purchase.customer_id, -taken, "refund", refund_id=refund.id,
                    expires_at=lot_expiry,
                    purchase_id=purchase.id, device_id=device.id,
                    reason=f"return on purchase {purchase.receipt or purchase.id}")
    owed = reversed_total - taken
    if owed:
        main.execute(update(customers).where(customers.c.id == purchase.customer_id)
                     .values(points_debt=customers.c.points_debt + owed))
    refund.amount_cents, refund.points_reversed = amount, reversed_total
    refund.points_restored, refund.shortfall = restored, owed
    main.flush()
    return _refund_result(main, refund), True


# -- redemptions ----------------------------------------------------------------------------

def _reward_dict(reward) -> dict:
    return {"code": reward.code, "name": reward.name, "kind": reward.kind,
            "value": str(reward.value) if reward.value is not None else None,
            "sku": reward.sku, "cost": reward.cost}


def _redemption_result(main: Session, redemption: Redemption) -> dict:
    _, programme = programmes.current(main)
    try:
        reward = _reward_dict(programme.reward(redemption.reward_code))
    except ProgrammeError:  # withdrawn from the catalogue since
        reward = {"code": redemption.reward_code}
    return {
        "redemption_id": redemption.id,
        "customer_id": redemption.customer_id,
        "reward": reward,
        "quantity": redemption.quantity,
        "points": redemption.points,
        "status": redemption.status,
        "balance": ledger.balance(main, redemption.customer_id),
    }


def _replay_redemption(main: Session, device: Principal, event_id: str) -> dict | None:
    return _replay(main, device, Redemption, event_id, _redemption_result)


def redeem(main: Session, device: Principal, req: RedemptionIn) -> tuple[dict, bool]:
    """Spend points on a reward of the catalogue; never below zero, even at two tills at once.

    Raises:
        Problem: ``reward-not-found``, ``reward-not-allowed``, ``step-up-required``,
            ``insufficient-points``, customer or card problems, ``event-id-conflict``.
    """
    event_id = str(req.event_id)
    previous = _replay_redemption(main, device, event_id)
    if previous is not None:
        return previous, False
    _, programme = programmes.current(main)
    store = _store(main, device, None)
    customer, _card = _customer(main, req)
    try:
        programme.reward(req.reward)
    except ProgrammeError:
        raise Problem("reward-not-found", f"no reward {req.reward!r} in the catalogue") from None
    try:
        reward = reward_allowed(programme, req.reward, tier=customer.tier, store=store.code)
    except ProgrammeError as exc:
        raise Problem("reward-not-allowed", str(exc)) from None
    points = reward.cost * req.quantity
    if needs_step_up(programme, points) and device.staff is None:
        if req.pin is None or customer.pin_hash is None:
            raise Problem("step-up-required", f"{points} points: the customer's PIN or a member "
                                              "of staff (X-Staff-Authorization) must confirm")
        check_pin(main, customer, req.pin)
    redemption = Redemption(event_id=event_id, customer_id=customer.id, reward_code=reward.code,
                            quantity=req.quantity, points=points, store_id=store.id,
                            device_id=device.id,
                            confirmed_by_staff_id=device.staff.id if device.staff else None)
    main.add(redemption)
    previous = flush_or_replay(main, lambda: _replay_redemption(main, device, event_id))
    if previous is not None:
        return previous, False
    ledger.post(main, customer.id, -points, "redeem", redemption_id=redemption.id,
                store_id=store.id, device_id=device.id, reason=f"reward {reward.code}",
                staff_id=device.staff.id if device.staff else None)
    return _redemption_result(main, redemption), True


PIN_ATTEMPTS = 5


def check_pin(main: Session, customer: Customer, pin: str) -> None:
    """Verify the customer's PIN; five misses in a row lock it until staff confirm.

    A miss is counted in its own transaction, so that the request's rollback (the answer is
    an error) does not forget it.

    Raises:
        Problem: ``pin-invalid`` or ``pin-locked``.
    """
    if customer.pin_failures >= PIN_ATTEMPTS:
        raise Problem("pin-locked")
    try:
        verify_password(customer.pin_hash, pin)
    except Problem:
        with Session(main.get_bind()) as counter:
            counter.execute(update(customers).where(customers.c.id == customer.id)
                            .values(pin_failures=customers.c.pin_failures + 1))
            counter.commit()
        left = PIN_ATTEMPTS - customer.pin_failures - 1
        raise Problem("pin-invalid", f"{left} attempt(s) left" if left else None) from None
    if customer.pin_failures:
        main.execute(update(customers).where(customers.c.id == customer.id)
                     .values(pin_failures=0))


# -- adjustments ----------------------------------------------------------------------------

def adjust(main: Session, principal: Principal, customer_id: str,
           req: AdjustmentIn) -> tuple[dict, bool]:
    """A manual correction by a manager, with the reason, never below zero.

    Raises:
        Problem: ``customer-not-found``, ``insufficient-points``, ``event-id-conflict``.
    """
    event_id = f"adjust:{req.event_id}"
    entry = main.scalar(select(PointsEntry).where(PointsEntry.event_id == event_id))
    if entry is None:
        customer = main.get(Customer, customer_id)
        if customer is None:
            raise Problem("customer-not-found")
        _, programme = programmes.current(main)
        now = datetime.now(UTC)
        entry_id = ledger.post(
            main, customer_id, req.points, "adjust", reason=req.reason, event_id=event_id,
            staff_id=principal.staff.id,
            expires_at=expiry_date(programme, now) if req.points > 0 else None)
        entry, created = main.get(PointsEntry, entry_id), True
    else:
        if entry.customer_id != customer_id:
            raise Problem("event-id-conflict")
        created = False
    return {"entry_id": entry.id, "customer_id": customer_id, "points": entry.delta,
            "reason": entry.reason, "balance": ledger.balance(main, customer_id)}, created
