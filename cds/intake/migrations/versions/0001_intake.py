"""Observation intake: per-patient record with versions, re-evaluations, worklist, notification outbox.

Revision ID: intake_0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds.audit.models import UTCDateTime

revision = "intake_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "intake_patient",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("client", sa.String(512), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("record_version", sa.Integer, nullable=False),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("last_evaluation", sa.String(36)),
        sa.Column("last_items", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("client", "patient_id", name="uq_intake_patient"),
    )
    op.create_table(
        "intake_resource",
        sa.Column("client", sa.String(512), primary_key=True),
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("rid", sa.String(64), primary_key=True),
        sa.Column("patient_pk", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("intake_patient.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_intake_resource_patient_pk", "intake_resource", ["patient_pk"])
    op.create_table(
        "intake_resource_version",
        sa.Column("client", sa.String(512), primary_key=True),
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("rid", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("patient_pk", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("intake_patient.id"), nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("post_id", sa.String(36), nullable=False),
    )
    op.create_table(
        "intake_identifier",
        sa.Column("client", sa.String(512), primary_key=True),
        sa.Column("rtype", sa.String(64), primary_key=True),
        sa.Column("system", sa.String(512), primary_key=True),
        sa.Column("value", sa.String(512), primary_key=True),
        sa.Column("rid", sa.String(64), primary_key=True),
    )
    op.create_table(
        "intake_evaluation",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_pk", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  sa.ForeignKey("intake_patient.id"), nullable=False),
        sa.Column("client", sa.String(512), nullable=False),
        sa.Column("post_id", sa.String(36), nullable=False),
        sa.Column("evaluated_at", UTCDateTime, nullable=False),
        sa.Column("as_of", sa.String(10), nullable=False),
        sa.Column("record_version", sa.Integer, nullable=False),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("previous_triage", sa.String(16), nullable=False),
        sa.Column("changed", sa.Boolean, nullable=False),
        sa.Column("urgency_rank", sa.Integer, nullable=False),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("cards", sa.Text, nullable=False),
    )
    op.create_index("ix_intake_evaluation_patient_pk", "intake_evaluation", ["patient_pk"])
    op.create_index("ix_intake_evaluation_open", "intake_evaluation", ["client", "changed", "urgency_rank"])
    op.create_table(
        "intake_worklist_card",
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("intake_evaluation.id"), primary_key=True),
        sa.Column("card", sa.String(128), primary_key=True),
    )
    op.create_index("ix_intake_worklist_card_card", "intake_worklist_card", ["card"])
    op.create_table(
        "intake_subscription",
        sa.Column("client", sa.String(512), primary_key=True),
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "intake_notification",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("subscriber", sa.String(600), nullable=False),
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("intake_evaluation.id"), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("last_error", sa.String(500)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.UniqueConstraint("subscriber", "evaluation_id", name="uq_intake_notification"),
    )
    op.create_index("ix_intake_notification_due", "intake_notification", ["status", "next_attempt_at"])
    op.create_table(
        "intake_notification_attempt",
        sa.Column("notification_id", sa.String(36), sa.ForeignKey("intake_notification.id"), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.String(500)),
    )


def downgrade() -> None:
    for table in ("intake_notification_attempt", "intake_notification", "intake_subscription",
                  "intake_worklist_card", "intake_evaluation", "intake_identifier", "intake_resource_version",
                  "intake_resource", "intake_patient"):
        op.drop_table(table)
