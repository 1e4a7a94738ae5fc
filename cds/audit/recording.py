"""Evaluate and record in one step: the durability contract in one place.

The answer is returned only after the sink has committed its record; if the
record cannot be written the caller gets StoreUnavailable (503), never the
answer. A failed evaluation is recorded too (outcome ``error``), then its
error is raised as before. Used by the CLI with a database and offered to
the HTTP layer; any AuditSink works.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cds.audit.facts_codec import facts_to_dicts
from cds.errors import CdsError, StoreUnavailable
from cds.evaluation.ports import AuditSink, EvaluationRecord
from cds.fhir import parse_json


@dataclass(frozen=True)
class Caller:
    """Who asked, as the edge authenticated it."""

    channel: str = "rest"
    client: str | None = None
    jti: str | None = None
    user: str | None = None
    hook: str | None = None
    hook_instance: str | None = None


@dataclass(frozen=True)
class AuditedResult:
    evaluation: dict[str, Any]
    cards: list[dict[str, Any]]
    record_id: str


def evaluate_and_record(evaluator: Any, sink: AuditSink, body: bytes, as_of: date, caller: Caller = Caller(), *,
                        make_cards: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
                        received_at: datetime | None = None) -> AuditedResult:
    """Parse, evaluate, build cards, commit the audit record, then return the answer."""
    received_at = received_at or datetime.now(UTC)
    started = time.perf_counter()
    digest = hashlib.sha256(body).hexdigest()
    patient: str | None = None
    facts: list[Any] = []
    try:
        data = parse_json(body)
        patient, facts = evaluator.facts(data, as_of)
        evaluation = evaluator.evaluate_facts(patient, facts, as_of)
        cards = make_cards(evaluation) if make_cards else []
    except CdsError as exc:
        _record_failure(evaluator, sink, body, as_of, caller, received_at, started, digest, patient, facts, exc)
        raise
    record = EvaluationRecord(
        received_at=received_at, channel=caller.channel, client=caller.client, jti=caller.jti, user=caller.user,
        hook=caller.hook, hook_instance=caller.hook_instance, patient=evaluation["patient"], input_sha256=digest,
        facts=facts_to_dicts(facts), ruleset=evaluation["ruleset"], firings=evaluation["firings"],
        recommendations=evaluation["recommendations"], alerts=evaluation["alerts"], triage=evaluation["triage"],
        cards=cards, duration_ms=(time.perf_counter() - started) * 1000, as_of=as_of.isoformat())
    record_id = _commit(sink, record, body)
    return AuditedResult(evaluation, cards, record_id)


def _record_failure(evaluator: Any, sink: AuditSink, body: bytes, as_of: date, caller: Caller,
                    received_at: datetime, started: float, digest: str, patient: str | None, facts: list[Any],
                    error: CdsError) -> None:
    record = EvaluationRecord(
        received_at=received_at, channel=caller.channel, client=caller.client, jti=caller.jti, user=caller.user,
        hook=caller.hook, hook_instance=caller.hook_instance, patient=patient, input_sha256=digest,
        facts=facts_to_dicts(facts), ruleset=evaluator.ruleset.identity(), firings=[], recommendations=[],
        alerts=[], triage="none", duration_ms=(time.perf_counter() - started) * 1000, outcome="error",
        error=f"{type(error).__name__}: {error.diagnostics}"[:2000], as_of=as_of.isoformat())
    _commit(sink, record, body)


def _commit(sink: AuditSink, record: EvaluationRecord, body: bytes) -> str:
    try:
        # AuditStore keeps the raw body when configured to; other sinks take the record alone.
        from cds.audit.store import AuditStore

        if isinstance(sink, AuditStore):
            return sink.record_evaluation(record, body)
        return sink.record_evaluation(record)
    except CdsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any sink failure must fail closed
        raise StoreUnavailable("the audit record could not be written, so the result is not released") from exc

