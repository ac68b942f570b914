"""What the report aggregates' triggers add to the hot path: a purchase of three lines and a
tap, each its own transaction, with the triggers of migrations 0017 and 0018 on or off.

    python bench/aggregates_cost.py --database-url postgresql://.../EMPTY_DATABASE

Migrates the (empty, throwaway) database, adds a store, a till and 200 customers, then times
``--rounds`` rounds of ``--per-round`` purchases and taps in each setting, alternating the
settings so that the machine's load falls on all of them alike. Prints the median
milliseconds per purchase and per tap of each setting. PostgreSQL only (SQLite has no
triggers of these).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

TRIGGERS = {  # table: (0017's, 0018's)
    "purchases": ((), ("customer_days_purchases_inserted",)),
    "purchase_lines": (("sales_days_lines_inserted",), ("category_days_lines_inserted",)),
    "visits": ((), ("visit_days_visits_inserted",)),
    "sales_days": ((), ("sales_months_days_inserted", "sales_months_days_updated")),
    "visit_days": ((), ("visit_months_days_inserted", "visit_months_days_updated")),
}
SETTINGS = {"no aggregate": (False, False), "sales_days (0017)": (True, False),
            "0017 + 0018": (True, True)}


def _set(session: Session, on17: bool, on18: bool) -> None:
    for table, (t17, t18) in TRIGGERS.items():
        for names, on in ((t17, on17), (t18, on18)):
            for name in names:
                session.execute(text(f"ALTER TABLE {table} "
                                     f"{'ENABLE' if on else 'DISABLE'} TRIGGER {name}"))
    session.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=300)
    args = parser.parse_args(argv)

    from server import create_app
    from server.cards.models import Card
    from server.customers.models import Customer
    from server.devices.models import Device
    from server.loyalty.models import Purchase, PurchaseLine
    from server.migrate import upgrade
    from server.stores.models import Store
    from server.taps.models import Visit

    instance = Path(tempfile.mkdtemp(prefix="bench-aggregates-"))
    app = create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": args.database_url,
                      "VAULT_URL": f"sqlite:///{instance / 'vault.db'}",
                      "VAULT_KEY_FILE": None, "CARD_KEYS_FILE": None})
    engine = app.extensions["loyalty.db"].main
    if engine.dialect.name != "postgresql":
        sys.exit("PostgreSQL only")
    with app.app_context():
        upgrade(app)
    with Session(engine) as s:
        store = Store(code="BENCH", name="Bench")
        s.add(store)
        s.flush()
        till = Device(store_id=store.id, role="till", name="till", key_hash=uuid.uuid4().hex)
        s.add(till)
        s.flush()
        customers = [f"B{n:06d}" for n in range(200)]
        s.add_all(Customer(id=c, language="fr", home_store_id=store.id) for c in customers)
        s.flush()
        s.add_all(Card(id=f"K{c}", customer_id=c, kind="qr", key_id=1,
                       issue_event_id=str(uuid.uuid4())) for c in customers)
        s.commit()
        store_id, till_id = store.id, till.id
    started = datetime(2026, 1, 1, tzinfo=UTC)
    n = 0

    def purchase(s: Session) -> None:
        nonlocal n
        n += 1
        cid = customers[n % len(customers)]
        p = Purchase(event_id=str(uuid.uuid4()), customer_id=cid, store_id=store_id,
                     device_id=till_id, seller="anna", currency="EUR", total_cents=4500,
                     paid_at=started + timedelta(minutes=17 * n))
        s.add(p)
        s.flush()
        s.execute(insert(PurchaseLine), [
            {"purchase_id": p.id, "line_no": k, "sku": f"SKU{(n + k) % 500}", "name": "thing",
             "category": f"cat{k}", "quantity_milli": 1000, "unit_price_cents": 1500,
             "net_cents": 1500} for k in range(1, 4)])
        s.commit()

    def tap(s: Session) -> None:
        nonlocal n
        n += 1
        cid = customers[n % len(customers)]
        at = started + timedelta(minutes=17 * n)
        s.add(Visit(event_id=str(uuid.uuid4()), customer_id=cid, card_id=f"K{cid}",
                    store_id=store_id, device_id=till_id, method="qr", tapped_at=at,
                    recorded_at=at))
        s.commit()

    timings: dict[tuple[str, str], list[float]] = {}
    with Session(engine) as s:
        for _ in range(50):  # warm up the connection, the plans and the caches
            purchase(s)
            tap(s)
        for _ in range(args.rounds):
            for name, (on17, on18) in SETTINGS.items():
                _set(s, on17, on18)
                for label, work in (("purchase", purchase), ("tap", tap)):
                    t = time.perf_counter()
                    for _ in range(args.per_round):
                        work(s)
                    took = (time.perf_counter() - t) / args.per_round * 1000
                    timings.setdefault((name, label), []).append(took)
        _set(s, True, True)
    print(f"{os.cpu_count()} CPUs; load average: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'setting':<20} {'ms/purchase':>12} {'ms/tap':>8}  (median of {args.rounds} rounds "
          f"of {args.per_round})")
    for name in SETTINGS:
        print(f"{name:<20} {statistics.median(timings[(name, 'purchase')]):>12.3f} "
              f"{statistics.median(timings[(name, 'tap')]):>8.3f}")
    app.extensions["loyalty.db"].dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
