"""The audit tables (SQLAlchemy 2 declarative models).

``audit_record`` is the hash chain: one row per evaluation, feedback or
pruning, whose ``content`` is the exact canonical JSON the hash covers. The
other tables are indexes derived from that content for the read API; verify
recomputes them from the content, so editing an index row is detected too.
``audit_input`` holds the PHI-bearing inputs (raw request, normalized facts)
beside the chain, so retention can purge them without breaking it: the
chain keeps their digests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

MAIN_CHAIN = "main"


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class ChainHead(Base):
    """The last link of a chain; appends lock this row (or the SQLite file)."""

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditRecord(Base):
    __tablename__ = "audit_record"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    record_id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)


class Evaluation(Base):
    __tablename__ = "audit_evaluation"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("audit_record.seq"), nullable=False, unique=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    client: Mapped[str | None] = mapped_column(String(512), index=True)
    user_ref: Mapped[str | None] = mapped_column(String(512))
    hook: Mapped[str | None] = mapped_column(String(128))
    hook_instance: Mapped[str | None] = mapped_column(String(128))
    patient: Mapped[str | None] = mapped_column(String(512), index=True)
    triage: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    ruleset_version: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)


class Firing(Base):
    __tablename__ = "audit_firing"
    __table_args__ = (Index("ix_audit_firing_rule", "rule", "evaluation_id"),)

    evaluation_id: Mapped[str] = mapped_column(String(36), ForeignKey("audit_evaluation.id"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rule: Mapped[str] = mapped_column(String(256), nullable=False)


class Action(Base):
    """A recommendation or alert an evaluation returned."""

    __tablename__ = "audit_action"
    __table_args__ = (Index("ix_audit_action_action", "action", "evaluation_id"),)

    evaluation_id: Mapped[str] = mapped_column(String(36), ForeignKey("audit_evaluation.id"), primary_key=True)
    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    action: Mapped[str] = mapped_column(String(128), nullable=False)
    urgency: Mapped[str | None] = mapped_column(String(16))
    rule: Mapped[str | None] = mapped_column(String(256))


class Card(Base):
    __tablename__ = "audit_card"

    uuid: Mapped[str] = mapped_column(String(128), primary_key=True)
    evaluation_id: Mapped[str] = mapped_column(String(36), ForeignKey("audit_evaluation.id"), nullable=False,
                                               index=True)


class CardRule(Base):
    """Which rules a card carries; feedback on the card counts for them."""

    __tablename__ = "audit_card_rule"

    card: Mapped[str] = mapped_column(String(128), ForeignKey("audit_card.uuid"), primary_key=True)
    rule: Mapped[str] = mapped_column(String(256), primary_key=True, index=True)


class Feedback(Base):
    __tablename__ = "audit_feedback"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("audit_record.seq"), nullable=False, unique=True)
    card: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    outcome_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)


class StoredInput(Base):
    """The PHI-bearing input of one evaluation, as CDS_AUDIT_STORE_INPUT allows."""

    __tablename__ = "audit_input"

    evaluation_id: Mapped[str] = mapped_column(String(36), ForeignKey("audit_evaluation.id"), primary_key=True)
    raw: Mapped[str | None] = mapped_column(Text)
    facts: Mapped[str | None] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
