"""A report's table as the page shows it and as CSV: one object, so the two cannot differ.

The CSV follows RFC 4180 (commas, CRLF, quotes doubled) in UTF-8 with a byte-order mark: the
BOM is what makes Excel read UTF-8 (é, ė, š) instead of the Windows code page, and commas with
a point for decimals are what every other tool (LibreOffice, pandas, a database's COPY) reads
without settings. A ``;`` separator would suit French Excel's double-click only, and break the
rest. Numbers are plain (``1234.50``, no thousands separator, no currency sign).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from flask_babel import format_currency, format_decimal, format_percent

BOM = "\ufeff"
KINDS = ("text", "int", "money", "quantity", "percent")  # percent: a 0-1 fraction


@dataclass(frozen=True)
class Column:
    key: str
    label: object  # a (lazy) string
    kind: str = "text"


@dataclass
class Table:
    columns: list[Column]
    rows: list[list] = field(default_factory=list)

    def plain(self, value, kind: str) -> str:
        """A cell as the CSV has it."""
        if value is None:
            return ""
        if kind == "money":
            return f"{value / 100:.2f}"
        if kind == "quantity":
            return f"{value / 1000:.3f}".rstrip("0").rstrip(".")
        if kind == "percent":
            return f"{value * 100:.1f}"
        return str(value)

    def shown(self, value, kind: str) -> str:
        """A cell as the page shows it, in the page's language."""
        if value is None:
            return "—"
        if kind == "money":
            return format_currency(value / 100, "EUR")
        if kind in ("quantity", "int"):
            return format_decimal(value / 1000 if kind == "quantity" else value)
        if kind == "percent":
            return format_percent(value, "#,##0.0%")
        return str(value)

    def html_rows(self) -> list[list[tuple[str, str]]]:
        """Each row as ``(text, kind)`` pairs, for the template."""
        return [[(self.shown(v, c.kind), c.kind) for v, c in zip(row, self.columns, strict=True)]
                for row in self.rows]

    def csv(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([str(c.label) for c in self.columns])
        for row in self.rows:
            writer.writerow([self.plain(v, c.kind) for v, c in zip(row, self.columns,
                                                                   strict=True)])
        return (BOM + out.getvalue()).encode("utf-8")
