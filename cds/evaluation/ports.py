"""What the service layer needs from the outside, as protocols.

The audit store (cds/audit) implements AuditSink; the HTTP layer and the
CLI receive one from the bootstrap. Keeping the protocol here keeps the
service layer free of the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class EvaluationRecord:
    """Everything an auditor needs about one evaluation."""

    received_at: datetime
    channel: str                    # "cds-hooks", "rest", "cli", "intake", "batch"
    client: str | None              # JWT iss
    jti: str | None
    user: str | None                # context.userId
    hook: str | None
    hook_instance: str | None
    patient: str | None
    input_sha256: str
    facts: list[dict[str, Any]]     # normalized input facts
    ruleset: dict[str, str]         # name, version, sha256
    firings: list[dict[str, Any]]
    recommendations: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    triage: str
    cards: list[dict[str, Any]] = field(default_factory=list)   # {"uuid", "summary", "indicator", "actions"}
    duration_ms: float = 0.0
    outcome: str = "success"        # or "error"
    error: str | None = None
    as_of: str | None = None


@dataclass(frozen=True)
class FeedbackRecord:
    card: str                       # card uuid
    outcome: str                    # "accepted" | "overridden"
    outcome_at: datetime
    accepted_suggestions: list[str] = field(default_factory=list)
    override_reason: dict[str, Any] | None = None
    user_comment: str | None = None
    client: str | None = None
    user: str | None = None


class AuditSink(Protocol):
    def record_evaluation(self, record: EvaluationRecord) -> str:
        """Commit the record; return its id. Raise StoreUnavailable if it cannot."""

    def record_feedback(self, feedback: FeedbackRecord) -> str:
        """Commit feedback for a known card; NotFound for an unknown card."""

    def card_exists(self, card_uuid: str) -> bool: ...


class MemoryAudit:
    """An in-process AuditSink for tests and for running without a store."""

    def __init__(self) -> None:
        self.evaluations: list[EvaluationRecord] = []
        self.feedback: list[FeedbackRecord] = []

    def record_evaluation(self, record: EvaluationRecord) -> str:
        self.evaluations.append(record)
        return str(len(self.evaluations))

    def record_feedback(self, feedback: FeedbackRecord) -> str:
        from cds.errors import NotFound

        if not self.card_exists(feedback.card):
            raise NotFound(f"unknown card {feedback.card[:64]}")
        self.feedback.append(feedback)
        return str(len(self.feedback))

    def card_exists(self, card_uuid: str) -> bool:
        return any(c.get("uuid") == card_uuid for r in self.evaluations for c in r.cards)
