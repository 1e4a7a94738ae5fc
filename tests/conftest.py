"""Shared fixtures: rulesets, evaluators and a small FHIR bundle builder."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds.evaluation import Evaluator
from cds.knowledge import load_ruleset

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "data" / "mini-ruleset"
SHARED_EXTERNAL = ROOT.parent / "shared" / "external"
AS_OF = date(2026, 11, 22)

FINDING = "http://spine-cds.local/fhir/CodeSystem/finding"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


@pytest.fixture(scope="session")
def mini_ruleset():
    return load_ruleset(MINI)


@pytest.fixture(scope="session")
def mini(mini_ruleset):
    return Evaluator(mini_ruleset)


@pytest.fixture(scope="session")
def bundled_ruleset():
    return load_ruleset()


@pytest.fixture(scope="session")
def bundled(bundled_ruleset):
    return Evaluator(bundled_ruleset)


def finding(rid: str, code: str, *, value: Any = True, on: str = "2026-11-15", system: str = FINDING,
            side: str | None = None, **extra: Any) -> dict[str, Any]:
    """An Observation stating a finding."""
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": on, **extra}
    if value is not None:
        resource["valueBoolean"] = value
    if side:
        code_ = {"left": "7771000", "right": "24028007", "bilateral": "51440002"}[side]
        resource["bodySite"] = {"coding": [{"system": SNOMED, "code": code_}]}
    return resource


def quantity(rid: str, loinc: str, value: Any, unit: str, on: str = "2026-11-15") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": loinc}]}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": on,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def bundle(*resources: dict[str, Any], patient: bool = True) -> dict[str, Any]:
    entries = []
    if patient:
        entries.append({"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01",
                                     "gender": "female"}})
    entries += [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def actions(evaluation: dict[str, Any]) -> dict[str, str]:
    return {r["action"]: r["urgency"] for r in evaluation["recommendations"]}


def alert_actions(evaluation: dict[str, Any]) -> set[str]:
    return {a["action"] for a in evaluation["alerts"]}
