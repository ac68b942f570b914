"""The products catalogue from a CSV file: ``sku,name,category,warranty_months``.

An upsert by SKU: a new SKU is added, a known one updated when something differs, and an
unchanged one left alone, so importing the same file twice changes nothing the second time.
Each bad line is reported with its number and why; the good lines are imported all the same.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.tickets.models import Product

COLUMNS = ("sku", "name", "category", "warranty_months")
LIMITS = {"sku": 64, "name": 200, "category": 64}
MAX_MONTHS = 1200  # 100 years: anything above is a typing error


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _parse(row: dict) -> tuple[dict | None, str | None]:
    """``(values, None)`` or ``(None, why the line is refused)``."""
    if None in row:
        return None, "too many columns"
    values = {k: (row.get(k) or "").strip() for k in COLUMNS}
    if not values["sku"]:
        return None, "sku is empty"
    if not values["name"]:
        return None, "name is empty"
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            return None, f"{name} is longer than {limit} characters"
    months = values["warranty_months"]
    if not months.isdigit() or int(months) > MAX_MONTHS:
        return None, (f"warranty_months must be a whole number of months from 0 to "
                      f"{MAX_MONTHS}, not {months!r}")
    values["warranty_months"] = int(months)
    values["category"] = values["category"] or None
    return values, None


def import_products(main: Session, lines: Iterable[str]) -> ImportReport:
    """Upsert the products of a CSV text (with its header line); flushes, never commits.

    Raises:
        ValueError: the header does not name the columns ``sku,name,category,warranty_months``.
    """
    reader = csv.DictReader(lines)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"the first line must name the columns {','.join(COLUMNS)}; "
                         f"missing: {', '.join(missing)}")
    reader.fieldnames = header
    report = ImportReport()
    seen: dict[str, int] = {}
    known = {p.sku: p for p in main.scalars(select(Product))}
    now = utcnow()
    for row in reader:
        number = reader.line_num
        values, error = _parse(row)
        if values is None:
            report.bad.append((number, error))
            continue
        sku = values["sku"]
        if sku in seen:
            report.bad.append((number, f"sku {sku} is already on line {seen[sku]}"))
            continue
        seen[sku] = number
        product = known.get(sku)
        if product is None:
            main.add(Product(**values, updated_at=now))
            report.added += 1
        elif any(getattr(product, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(product, k, v)
            product.updated_at = now
            report.updated += 1
        else:
            report.unchanged += 1
    main.flush()
    return report
