"""The value-score snapshot: every active customer's score as ``scores()`` computed it at one
moment, so that pages read one indexed row instead of ranking every customer live."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, UTCDateTime


class ValueSnapshot(Base):
    """When the snapshot in ``value_scores`` was computed, with which programme version, and
    its band counts (so that the ranking page need not count a million rows). At most one
    row: a refresh replaces it with the scores, in the same transaction."""

    __tablename__ = "value_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the ``now`` scored at
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
    programme_version: Mapped[int] = mapped_column(Integer)  # 0: the built-in default
    window_months: Mapped[int] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer)
    live: Mapped[int] = mapped_column(Integer)  # customers not erased, then
    premium: Mapped[int] = mapped_column(Integer)
    high: Mapped[int] = mapped_column(Integer)
    medium: Mapped[int] = mapped_column(Integer)
    low: Mapped[int] = mapped_column(Integer)
    refreshed_by: Mapped[str] = mapped_column(String(64))


class ValueScore(Base):
    """One active customer's row of ``server.value.service.scores()`` at the snapshot's time.

    No foreign key to customers: the table is rebuilt whole by one INSERT ... SELECT, and a
    customer erased since simply drops out at the next refresh (readers join customers).
    """

    __tablename__ = "value_scores"
    __table_args__ = (Index("ix_value_scores_place", "place", "net_cents", "customer_id"),
                      Index("ix_value_scores_band_place", "band", "place"),
                      Index("ix_value_scores_score", "score"))

    customer_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    purchases: Mapped[int] = mapped_column(Integer)
    net_cents: Mapped[int] = mapped_column(BigInteger)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime())
    tickets: Mapped[int] = mapped_column(Integer)
    load_milli: Mapped[int] = mapped_column(Integer)
    on_time: Mapped[int | None] = mapped_column(Integer)
    active: Mapped[int] = mapped_column(Integer)
    recency: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[int] = mapped_column(Integer)
    support: Mapped[int] = mapped_column(Integer)
    punctuality: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer)
    place: Mapped[int] = mapped_column(Integer)
    band: Mapped[str] = mapped_column(String(8))
