"""The audit trail: hash-chained records, read indexes, stored inputs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cds.audit.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    head = op.create_table(
        "audit_chain_head",
        sa.Column("chain", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"chain": "main", "seq": 0, "hash": GENESIS}])
    op.create_table(
        "audit_record",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.String(36), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_record_recorded_at", "audit_record", ["recorded_at"])
    op.create_table(
        "audit_evaluation",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.ForeignKey("audit_record.seq"), nullable=False, unique=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("client", sa.String(512)),
        sa.Column("user_ref", sa.String(512)),
        sa.Column("hook", sa.String(128)),
        sa.Column("hook_instance", sa.String(128)),
        sa.Column("patient", sa.String(512)),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("ruleset_version", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    for column in ("received_at", "client", "patient", "triage"):
        op.create_index(f"ix_audit_evaluation_{column}", "audit_evaluation", [column])
    op.create_table(
        "audit_firing",
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("audit_evaluation.id"), primary_key=True),
        sa.Column("ordinal", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("rule", sa.String(256), nullable=False),
    )
    op.create_index("ix_audit_firing_rule", "audit_firing", ["rule", "evaluation_id"])
    op.create_table(
        "audit_action",
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("audit_evaluation.id"), primary_key=True),
        sa.Column("ordinal", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("urgency", sa.String(16)),
        sa.Column("rule", sa.String(256)),
    )
    op.create_index("ix_audit_action_action", "audit_action", ["action", "evaluation_id"])
    op.create_table(
        "audit_card",
        sa.Column("uuid", sa.String(128), primary_key=True),
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("audit_evaluation.id"), nullable=False),
    )
    op.create_index("ix_audit_card_evaluation_id", "audit_card", ["evaluation_id"])
    op.create_table(
        "audit_card_rule",
        sa.Column("card", sa.String(128), sa.ForeignKey("audit_card.uuid"), primary_key=True),
        sa.Column("rule", sa.String(256), primary_key=True),
    )
    op.create_index("ix_audit_card_rule_rule", "audit_card_rule", ["rule"])
    op.create_table(
        "audit_feedback",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.ForeignKey("audit_record.seq"), nullable=False, unique=True),
        sa.Column("card", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_audit_feedback_card", "audit_feedback", ["card"])
    op.create_index("ix_audit_feedback_outcome_at", "audit_feedback", ["outcome_at"])
    op.create_table(
        "audit_input",
        sa.Column("evaluation_id", sa.String(36), sa.ForeignKey("audit_evaluation.id"), primary_key=True),
        sa.Column("raw", sa.Text),
        sa.Column("facts", sa.Text),
        sa.Column("purged_at", UTCDateTime),
    )


def downgrade() -> None:
    for table in ("audit_input", "audit_feedback", "audit_card_rule", "audit_card", "audit_action",
                  "audit_firing", "audit_evaluation", "audit_record", "audit_chain_head"):
        op.drop_table(table)
