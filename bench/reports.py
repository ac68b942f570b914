"""Time the back office's reports on a loaded database (DESIGN.md: under 5 s on PostgreSQL with
1,000,000 customers and 10,000,000 purchases).

    python bench/reports.py --database-url postgresql://... --vault-url postgresql://...

Each step runs in its own transaction through the same service functions as the pages: the
value refresh (committed: the steps after it read that snapshot), the value page's queries,
one customer's explanation, segment counts and members for typical definitions, best sellers
by month over the last year for everyone and for a segment, visits, habits, sellers, stores.
Prints one line per step (rows, first run, best of ``--repeat``) and the machine's load;
``--plans`` adds PostgreSQL's EXPLAIN ANALYZE of each step's slowest statement. Exits 1 if a
step failed, 2 if one is over ``--target`` seconds with ``--strict``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

log = logging.getLogger("bench.reports")

# typical segments: a manager's "best customers", a profile with consent, a category's recent
# buyers, a region's summer buyers, a tier
SEGMENTS = {
    "best customers (premium, high)": {"bands": ["premium", "high"]},
    "women 25-34, email consent": {"sexes": ["female"], "age_bands": ["25-34"],
                                   "consents": ["marketing_email"]},
    "a category, last 6 months": {"categories": ["__CATEGORY__"], "within_months": 6},
    "a region's summer buyers": {"regions": ["__REGION__"], "seasons": ["summer"]},
    "gold tier, score 50+": {"tiers": ["gold"], "score_min": 50},
}


@dataclass
class Step:
    name: str
    rows: int | None = None
    times: list[float] = field(default_factory=list)
    error: str | None = None
    slowest: tuple[float, str, object] | None = None  # (seconds, statement, parameters)


class Capture:
    """The statements a step sends, with their duration (for --plans)."""

    def __init__(self, engine) -> None:
        self.current: list[tuple[float, str, object]] = []
        self._started: dict[int, float] = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        took = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        self.current.append((took, statement, parameters))


def _app(database_url: str, vault_url: str):
    from server import create_app

    instance = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    return create_app({"INSTANCE_PATH": str(instance), "DATABASE_URL": database_url,
                       "VAULT_URL": vault_url, "VAULT_KEY_FILE": None, "CARD_KEYS_FILE": None})


def _run(app, engine, capture: Capture, name: str, work: Callable[[Session], int],
         repeat: int, commit: bool = False) -> Step:
    step = Step(name)
    for _ in range(repeat):
        capture.current = []
        with app.app_context(), Session(engine) as session:
            try:
                started = time.perf_counter()
                step.rows = work(session)
                if commit:
                    session.commit()
                step.times.append(time.perf_counter() - started)
            except Exception as exc:  # reported in the table, and the exit status
                session.rollback()
                step.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                log.debug("%s failed\n%s", name, traceback.format_exc())
                return step
            finally:
                if not commit:
                    session.rollback()
        slowest = max(capture.current, default=None, key=lambda c: c[0])
        if slowest and (step.slowest is None or slowest[0] > step.slowest[0]):
            step.slowest = slowest
    return step


def _plan(engine, step: Step) -> str:
    _took, statement, parameters = step.slowest
    if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
        return "(not a SELECT: no plan)"
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor:
            cursor.execute("SET work_mem = '128MB'")
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(r[0] for r in cursor.fetchall())
        raw.rollback()
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--vault-url", required=True)
    parser.add_argument("--repeat", type=int, default=2, help="runs per step (default 2)")
    parser.add_argument("--target", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--strict", action="store_true", help="exit 2 if a step is over target")
    parser.add_argument("--plans", action="store_true", help="EXPLAIN ANALYZE the slowest "
                                                             "statement of each step")
    parser.add_argument("--skip-refresh", action="store_true",
                        help="use the value snapshot already there")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from server.customers.models import Customer
    from server.loyalty import programmes
    from server.loyalty.models import Purchase, PurchaseLine
    from server.reports import service as reports
    from server.reports.aggregates import rebuild
    from server.reports.models import CustomerDay, SalesDay
    from server.segments import service as segments
    from server.segments.schemas import Definition
    from server.stores.models import Store
    from server.value import service as value
    from server.value.models import ValueScore

    app = _app(args.database_url, args.vault_url)
    engine = app.extensions["loyalty.db"].main
    capture = Capture(engine)
    with app.app_context(), Session(engine) as s:
        dialect = engine.dialect.name
        server_version = (s.scalar(text("SHOW server_version")) if dialect == "postgresql"
                          else s.scalar(text("SELECT sqlite_version()")))
        counts = {"customers": s.scalar(select(func.count()).select_from(Customer)),
                  "purchases": s.scalar(select(func.count()).select_from(Purchase)),
                  "purchase lines": s.scalar(select(func.count()).select_from(PurchaseLine))}
        category = s.scalar(select(PurchaseLine.category).where(
            PurchaseLine.category.is_not(None)).limit(1)) or "none"
        region = s.scalar(select(Store.region).where(Store.region.is_not(None)).limit(1)) \
            or "none"
        programme = programmes.current(s)[1]
        today = reports.today(s)
    print(f"{dialect} {server_version}; " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
    print(f"{os.cpu_count()} CPUs; load average before: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    year = (today - timedelta(days=365), today)
    now = datetime.now(UTC)
    steps: list[Step] = []

    def definition(name: str) -> Definition:
        d = {k: ([category] if v == ["__CATEGORY__"] else [region] if v == ["__REGION__"]
                 else v) for k, v in SEGMENTS[name].items()}
        return Definition(**d)

    if dialect == "postgresql":
        # a bulk load with triggers off (session_replication_role = replica, as
        # bench/generate.py does) leaves the aggregates behind the tables: rebuild, timed
        with app.app_context(), Session(engine) as s:
            kept = s.scalar(select(func.coalesce(func.sum(SalesDay.lines), 0)))
            baskets = s.scalar(select(func.coalesce(func.sum(CustomerDay.baskets), 0)))
        if kept != counts["purchase lines"] or baskets != counts["purchases"]:
            print(f"sales_days counts {kept:,} of {counts['purchase lines']:,} lines, "
                  f"customer_days {baskets:,} of {counts['purchases']:,} purchases: "
                  "rebuilding the aggregates (flask reports rebuild)")
            steps.append(_run(app, engine, capture, "reports: rebuild the aggregates",
                              rebuild, 1, commit=True))
    if not args.skip_refresh:
        steps.append(_run(app, engine, capture, "value: refresh the snapshot",
                          lambda s: value.refresh(s, now, "bench").active, 1, commit=True))

    def ranking(s: Session) -> int:
        found = value.snapshot(s)
        value.band_counts(found)
        return len(value.ranking(s, limit=50))

    steps.append(_run(app, engine, capture, "value: ranking page (top 50)", ranking,
                      args.repeat))
    steps.append(_run(app, engine, capture, "value: ranking page, premium band",
                      lambda s: len(value.ranking(s, limit=50, band="premium")), args.repeat))
    with app.app_context(), Session(engine) as s:
        middle = s.scalar(select(ValueScore.customer_id).order_by(ValueScore.place)
                          .offset(max(0, (value.snapshot(s).active if value.snapshot(s) else 0)
                                      // 2)).limit(1))
    if middle:
        steps.append(_run(app, engine, capture, "value: one customer's explanation",
                          lambda s: len(value.explain(s, programme, middle).components),
                          args.repeat))
    for name in SEGMENTS:
        d = definition(name)
        steps.append(_run(app, engine, capture, f"segment count: {name}",
                          lambda s, d=d: segments.count(s, d, now), args.repeat))
        steps.append(_run(app, engine, capture, f"segment members: {name}",
                          lambda s, d=d: len(s.scalars(segments.members(s, d, now)).all()),
                          args.repeat))

    def span(s: Session):
        return reports.span(s, *year)

    best = definition("best customers (premium, high)")
    steps.append(_run(app, engine, capture, "best sellers by month, a year",
                      lambda s: len(reports.best_sellers(s, span(s), "month")), args.repeat))
    steps.append(_run(app, engine, capture, "best sellers by month, a year, each store",
                      lambda s: len(reports.best_sellers(s, span(s), "month", by_store=True)),
                      args.repeat))
    steps.append(_run(app, engine, capture, "best sellers by month, a year, segment",
                      lambda s: len(reports.best_sellers(
                          s, span(s), "month", customers=segments.members(s, best, now))),
                      args.repeat))
    steps.append(_run(app, engine, capture, "visits by month, a year",
                      lambda s: len(reports.visits(s, span(s), "month")), args.repeat))
    steps.append(_run(app, engine, capture, "habits, a year",
                      lambda s: len(reports.habits(s, span(s))), args.repeat))
    steps.append(_run(app, engine, capture, "sellers, a year",
                      lambda s: len(reports.sellers(s, span(s))), args.repeat))
    steps.append(_run(app, engine, capture, "stores, a year",
                      lambda s: len(reports.stores(s, span(s))), args.repeat))

    width = max(len(st.name) for st in steps)
    print(f"\n{'step':<{width}}  {'rows':>9}  {'first s':>8}  {'best s':>8}")
    failed = over = False
    for st in steps:
        if st.error:
            failed = True
            print(f"{st.name:<{width}}  {'ERROR':>9}  {st.error}")
            continue
        best_time = min(st.times)
        over |= best_time > args.target
        mark = "  OVER" if best_time > args.target else ""
        print(f"{st.name:<{width}}  {st.rows:>9,}  {st.times[0]:>8.3f}  {best_time:>8.3f}{mark}")
    print("\nload average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.plans and dialect == "postgresql":
        for st in steps:
            if st.slowest and not st.error:
                print(f"\n=== {st.name}: slowest statement {st.slowest[0]:.3f} s\n"
                      f"{st.slowest[1].strip()}\n--- plan\n{_plan(engine, st)}")
    app.extensions["loyalty.db"].dispose()
    if failed:
        return 1
    return 2 if over and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
