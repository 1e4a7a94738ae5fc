"""The intake tables (SQLAlchemy 2 declarative models), beside the audit tables.

Per patient (namespaced by the EHR client that posts, since two EHRs may
use the same patient id for different people): the current version of
every resource, every version ever accepted, the identifiers used by
``If-None-Exist``, each re-evaluation with its difference from the one
before (the worklist items are the evaluations that changed something),
and the notification outbox with every delivery attempt.

The tables have their own Alembic history (version table
``intake_alembic_version``, cds/intake/migrations) so the audit schema and
its model-equals-migration check stay exactly the audit's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cds.audit.models import UTCDateTime


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """One patient's record as a whole; ``record_version`` moves on every accepted change."""

    __tablename__ = "intake_patient"
    __table_args__ = (UniqueConstraint("client", "patient_id", name="uq_intake_patient"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    client: Mapped[str] = mapped_column(String(512), nullable=False)      # JWT iss; "" with auth off
    patient_id: Mapped[str] = mapped_column(String(64), nullable=False)
    record_version: Mapped[int] = mapped_column(Integer, nullable=False)
    triage: Mapped[str] = mapped_column(String(16), nullable=False)
    last_evaluation: Mapped[str | None] = mapped_column(String(36))
    last_items: Mapped[str] = mapped_column(Text, nullable=False)          # JSON: item id -> summary
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Resource(Base):
    """The current version of one resource."""

    __tablename__ = "intake_resource"

    client: Mapped[str] = mapped_column(String(512), primary_key=True)
    rtype: Mapped[str] = mapped_column(String(64), primary_key=True)
    rid: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("intake_patient.id"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ResourceVersion(Base):
    """Every accepted version; later ones (entered-in-error, corrections) supersede earlier ones."""

    __tablename__ = "intake_resource_version"

    client: Mapped[str] = mapped_column(String(512), primary_key=True)
    rtype: Mapped[str] = mapped_column(String(64), primary_key=True)
    rid: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("intake_patient.id"), nullable=False)
    status: Mapped[str | None] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    post_id: Mapped[str] = mapped_column(String(36), nullable=False)


class Identifier(Base):
    """Resource.identifier of current versions, for conditional create (If-None-Exist)."""

    __tablename__ = "intake_identifier"

    client: Mapped[str] = mapped_column(String(512), primary_key=True)
    rtype: Mapped[str] = mapped_column(String(64), primary_key=True)
    system: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    rid: Mapped[str] = mapped_column(String(64), primary_key=True)


class Evaluation(Base):
    """One re-evaluation after an accepted post; ``changed`` ones are worklist items."""

    __tablename__ = "intake_evaluation"
    __table_args__ = (Index("ix_intake_evaluation_open", "client", "changed", "urgency_rank"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)          # the audit record id
    patient_pk: Mapped[int] = mapped_column(ForeignKey("intake_patient.id"), nullable=False, index=True)
    client: Mapped[str] = mapped_column(String(512), nullable=False)
    post_id: Mapped[str] = mapped_column(String(36), nullable=False)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    as_of: Mapped[str] = mapped_column(String(10), nullable=False)
    record_version: Mapped[int] = mapped_column(Integer, nullable=False)
    triage: Mapped[str] = mapped_column(String(16), nullable=False)
    previous_triage: Mapped[str] = mapped_column(String(16), nullable=False)
    changed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    urgency_rank: Mapped[int] = mapped_column(Integer, nullable=False)    # 0 emergency .. 4 none
    diff: Mapped[str] = mapped_column(Text, nullable=False)                # JSON: new, changed, withdrawn
    cards: Mapped[str] = mapped_column(Text, nullable=False)               # JSON: the item's cards


class WorklistCard(Base):
    """The cards of a worklist item that need an accept/override (feedback) to close it."""

    __tablename__ = "intake_worklist_card"

    evaluation_id: Mapped[str] = mapped_column(ForeignKey("intake_evaluation.id"), primary_key=True)
    card: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


class Subscription(Base):
    """A REST-hook subscriber registered through ``POST /fhir/Subscription``."""

    __tablename__ = "intake_subscription"

    client: Mapped[str] = mapped_column(String(512), primary_key=True)
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(2048), nullable=False)
    headers: Mapped[str] = mapped_column(Text, nullable=False)             # JSON list of "Name: value"
    content: Mapped[str] = mapped_column(Text, nullable=False)             # the resource as stored
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Notification(Base):
    """The outbox: one row per (subscriber, triage rise); unique, so never two for one change."""

    __tablename__ = "intake_notification"
    __table_args__ = (UniqueConstraint("subscriber", "evaluation_id", name="uq_intake_notification"),
                      Index("ix_intake_notification_due", "status", "next_attempt_at"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscriber: Mapped[str] = mapped_column(String(600), nullable=False)   # "config:<id>" or "api:<client> <id>"
    evaluation_id: Mapped[str] = mapped_column(ForeignKey("intake_evaluation.id"), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)        # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationAttempt(Base):
    __tablename__ = "intake_notification_attempt"

    notification_id: Mapped[str] = mapped_column(ForeignKey("intake_notification.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)       # delivered, retry, failed
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
