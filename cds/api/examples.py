"""A sample CDS Hooks request, for the start-up banner's ready-to-run curl
and for docs/api.md: suspected cauda equina syndrome (new urinary
retention two days ago with sciatica), which the red-flag rules must
answer with a critical card."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

SNOMED = "http://snomed.info/sct"


def patient_view(today: date | None = None) -> dict[str, Any]:
    today = today or date.today()

    def observation(rid: str, code: str, days_ago: int) -> dict[str, Any]:
        return {"resource": {
            "resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": code}]},
            "subject": {"reference": "Patient/example"}, "valueBoolean": True,
            "effectiveDateTime": (today - timedelta(days=days_ago)).isoformat()}}

    return {
        "hook": "patient-view",
        "hookInstance": "5f1e7a52-6c1d-4d8e-9f3a-0d2b7c9e4a11",
        "context": {"userId": "Practitioner/example", "patientId": "example"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "example", "birthDate": "1971-04-02",
                        "gender": "female"},
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [
                observation("urinary-retention", "267064002", 2),
                observation("sciatica", "23056005", 10)]},
            "conditions": None, "medicationStatements": None, "medicationRequests": None,
            "procedures": None, "diagnosticReports": None, "devices": None,
        },
    }


def curl(base_url: str, *, token: bool = False) -> str:
    """A ready curl that posts the sample to the patient-view service."""
    body = json.dumps(patient_view(), separators=(",", ":"))
    auth = ' -H "Authorization: Bearer $CDS_TOKEN"' if token else ""
    return (f"curl -s -X POST {base_url}/cds-services/back-neuropathy-patient-view "
            f"-H 'Content-Type: application/json'{auth} -d '{body}'")
