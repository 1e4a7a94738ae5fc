"""The benchmark's inputs are what docs/performance.md says they are
(make bench itself is not run by the tests: figures are not asserted)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from bench import records
from bench.bare_app import create_app as bare_app
from bench.run import _copied_ruleset, floor_runner
from cds.api import create_app
from cds.evaluation import Evaluator
from cds.evaluation.ports import MemoryAudit
from cds.knowledge import load_ruleset

AS_OF = date(2026, 11, 22)


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(load_ruleset())


@pytest.mark.parametrize("size", [100, 1000, 10_000])
def test_padded_records_keep_the_clinical_answer(evaluator: Evaluator, size: int) -> None:
    base = evaluator.evaluate(records.sample(), AS_OF)
    bundle = records.padded(size)
    assert len(bundle["entry"]) == size
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Encounter", "Immunization", "AllergyIntolerance", "MedicationRequest"} <= types
    padded = evaluator.evaluate(bundle, AS_OF)
    assert padded["triage"] == base["triage"]
    assert [r["action"] for r in padded["recommendations"]] == [r["action"] for r in base["recommendations"]]
    _patient, facts = evaluator.facts(bundle, AS_OF)
    # mostly unrelated: about one resource in fifty becomes a fact
    assert len(facts) < len(records.sample()["entry"]) + size // 40


def test_the_floor_replays_the_same_firings(evaluator: Evaluator) -> None:
    data = records.sample()
    ours = evaluator.evaluate(data, AS_OF)
    facts = floor_runner(evaluator, data, AS_OF)()
    derived = [f for f in facts if f["type"] == "recommendation"]
    assert {f["action"] for f in derived} == {r["action"] for r in ours["recommendations"]}
    assert len(facts) > len(evaluator.facts(data, AS_OF)[1]), "the floor asserted the derived facts too"


def test_the_patient_view_request_is_answered_like_the_sample(evaluator: Evaluator) -> None:
    app = create_app({"CDS_AUTH": "off", "CDS_BIND": "127.0.0.1:8080", "AUDIT": MemoryAudit(),
                      "EVALUATOR": evaluator})
    response = app.test_client().post("/cds-services/back-neuropathy-patient-view",
                                      json=records.patient_view())
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    assert cards, "the typical request gets cards"


def test_the_bare_floor_answers_the_size_it_is_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_BENCH_ANSWER_BYTES", "9261")
    body = json.dumps(records.patient_view()).encode()
    response = bare_app().test_client().post("/cds-services/x", data=body, content_type="application/json")
    assert response.status_code == 200 and len(response.data) == 9261


def test_rule_copies_load_and_fire_beside_the_originals(tmp_path: Path, evaluator: Evaluator) -> None:
    doubled = Evaluator(load_ruleset(_copied_ruleset(2, tmp_path)))
    assert len(doubled.ruleset.rules) == 2 * len(evaluator.ruleset.rules)
    one = evaluator.evaluate(records.sample(), AS_OF)
    two = doubled.evaluate(records.sample(), AS_OF)
    assert two["triage"] == one["triage"]
    assert len(two["firings"]) == 2 * len(one["firings"])
