"""Evaluate one patient's record against one ruleset."""

from __future__ import annotations

from datetime import date
from typing import Any

from cds.domain.facts import Fact
from cds.engine import Engine
from cds.evaluation.explain import build
from cds.evaluation.session import Session
from cds.fhir import Normalizer, read_record
from cds.knowledge import Ruleset

EVALUATION_DATE_FORMAT = "%Y-%m-%d"


class Evaluator:
    """Holds a loaded ruleset and its engine; safe to share across threads."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.engine = Engine(ruleset.key, ruleset.compiled, [r.id for r in ruleset.rules])

    def facts(self, data: Any, as_of: date) -> tuple[str | None, list[Fact]]:
        """The patient reference and input facts of a parsed request."""
        record = read_record(data)
        return record.patient, Normalizer(self.ruleset.terminology, as_of).facts(record)

    def evaluate(self, data: Any, as_of: date) -> dict[str, Any]:
        """The contract's evaluation object for a parsed request body."""
        patient, facts = self.facts(data, as_of)
        return self.evaluate_facts(patient, facts, as_of)

    def evaluate_facts(self, patient: str | None, facts: list[Fact], as_of: date) -> dict[str, Any]:
        session = Session(self.ruleset, facts)
        self.engine.run([f.engine_view() for f in facts], session.on_match)
        return build(session, patient=patient, as_of=as_of.isoformat())
