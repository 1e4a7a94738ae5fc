"""Small FHIR bundles for the audit tests, and a card maker like the service's."""

from __future__ import annotations

import uuid
from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
FINDING = "http://spine-cds.local/fhir/CodeSystem/finding"


def _obs(rid: str, system: str, code: str, **value: Any) -> dict[str, Any]:
    return {"resource": {"resourceType": "Observation", "id": rid, "status": "final",
                         "code": {"coding": [{"system": system, "code": code}]}, **value}}


def patient(pid: str = "p1", birth: str = "1970-01-01") -> dict[str, Any]:
    return {"resource": {"resourceType": "Patient", "id": pid, "birthDate": birth, "gender": "female"}}


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}


def sciatica(pid: str = "p1", *, egfr: float | None = None) -> dict[str, Any]:
    """Acute sciatica (12 days); with a low eGFR the NSAID is withdrawn with an alert."""
    entries = [patient(pid), _obs(f"{pid}-sciatica", SNOMED, "23056005", valueBoolean=True,
                                  effectiveDateTime="2026-11-10")]
    if egfr is not None:
        entries.append(_obs(f"{pid}-egfr", LOINC, "98979-8", effectiveDateTime="2026-11-01",
                            valueQuantity={"value": egfr, "unit": "mL/min/{1.73_m2}",
                                           "system": "http://unitsofmeasure.org", "code": "mL/min/{1.73_m2}"}))
    return bundle(*entries)


def cauda_equina(pid: str = "p2") -> dict[str, Any]:
    return bundle(patient(pid), _obs(f"{pid}-saddle", FINDING, "saddle-anesthesia", valueBoolean=True),
                  _obs(f"{pid}-sciatica", SNOMED, "23056005", valueBoolean=True, effectiveDateTime="2026-11-10"))


def cards_for(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One card per recommendation and alert, naming its rule, as the service's cards do."""
    return [{"uuid": str(uuid.uuid4()), "summary": item["title"][:140],
             "indicator": "critical" if item["urgency"] == "emergency" else "info",
             "rules": [item["rule"]], "recommendations": [item["id"]]}
            for item in [*evaluation["recommendations"], *evaluation["alerts"]]]
