"""Synthetic but realistic records for the benchmarks, the batch tests and
the load tests.

A real record is mostly resources the rules never read: vital signs,
encounters, immunizations, unrelated diagnoses and drugs. ``padded`` keeps a
sample's clinical story and adds such resources (and, as real records have,
a few repeated readings the rules do read: HbA1c and pain scores over the
years) up to the size asked for.
"""

from __future__ import annotations

import copy
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "fhir_samples"
TYPICAL = "20-concordant-imaging-epidural"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

_VITALS = [("8867-4", "Heart rate", "/min", 55, 95), ("9279-1", "Respiratory rate", "/min", 12, 20),
           ("29463-7", "Body weight", "kg", 55, 110), ("8302-2", "Body height", "cm", 150, 195),
           ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 80, 99),
           ("718-7", "Hemoglobin", "g/dL", 12, 16), ("2093-3", "Cholesterol", "mg/dL", 150, 240)]
_CONDITIONS = [("38341003", "Hypertension"), ("195967001", "Asthma"), ("35489007", "Depressive disorder"),
               ("40055000", "Chronic sinusitis"), ("13645005", "COPD")]
_DRUGS = [("29046", "lisinopril"), ("17767", "amlodipine"), ("36567", "simvastatin"), ("10582", "levothyroxine")]


def sample(name: str = TYPICAL) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def _patient_ref(bundle: dict[str, Any]) -> str:
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return f"Patient/{patient['id']}"


def unrelated(n: int, subject: str, as_of: date, rng: random.Random, prefix: str = "x") -> list[dict[str, Any]]:
    """``n`` resources no rule reads (about 1 in 50 a reading that it does)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        when = (as_of - timedelta(days=rng.randint(1, 3650))).isoformat()
        rid = f"{prefix}{i}"
        kind = i % 50
        if kind == 0:
            # A repeated, relevant reading: a normal HbA1c
            out.append({"resourceType": "Observation", "id": rid, "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
                        "subject": {"reference": subject}, "effectiveDateTime": when,
                        "valueQuantity": {"value": round(rng.uniform(4.8, 5.6), 1), "unit": "%",
                                          "system": "http://unitsofmeasure.org", "code": "%"}})
        elif kind < 30:
            code, display, unit, low, high = _VITALS[i % len(_VITALS)]
            out.append({"resourceType": "Observation", "id": rid, "status": "final",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                  "observation-category", "code": "vital-signs"}]}],
                        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                        "subject": {"reference": subject}, "effectiveDateTime": when,
                        "valueQuantity": {"value": rng.randint(low, high), "unit": unit}})
        elif kind < 38:
            out.append({"resourceType": "Encounter", "id": rid, "status": "finished",
                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                        "subject": {"reference": subject}, "period": {"start": when, "end": when}})
        elif kind < 42:
            code, display = _CONDITIONS[i % len(_CONDITIONS)]
            out.append({"resourceType": "Condition", "id": rid,
                        "clinicalStatus": {"coding": [{"code": "active"}]},
                        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                        "subject": {"reference": subject}, "onsetDateTime": when})
        elif kind < 46:
            code, display = _DRUGS[i % len(_DRUGS)]
            out.append({"resourceType": "MedicationRequest", "id": rid, "status": "active", "intent": "order",
                        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code,
                                                                  "display": display}]},
                        "subject": {"reference": subject}, "authoredOn": when})
        elif kind < 48:
            out.append({"resourceType": "Immunization", "id": rid, "status": "completed",
                        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
                        "patient": {"reference": subject}, "occurrenceDateTime": when})
        else:
            out.append({"resourceType": "AllergyIntolerance", "id": rid,
                        "code": {"coding": [{"system": SNOMED, "code": "91936005", "display": "Penicillin"}]},
                        "patient": {"reference": subject}, "recordedDate": when})
    return out


def padded(size: int, base: dict[str, Any] | None = None, as_of: date = date(2026, 11, 22),
           seed: int = 7) -> dict[str, Any]:
    """A Bundle of ``size`` resources: the base sample's plus unrelated ones."""
    bundle = copy.deepcopy(base or sample())
    entries = bundle["entry"]
    extra = max(0, size - len(entries))
    rng = random.Random(seed)
    entries.extend({"resource": r} for r in unrelated(extra, _patient_ref(bundle), as_of, rng))
    bundle["entry"] = entries[:size]
    return bundle


_PREFETCH_KEYS = {"Observation": "observations", "Condition": "conditions", "Procedure": "procedures",
                  "DiagnosticReport": "diagnosticReports", "MedicationStatement": "medicationStatements",
                  "MedicationRequest": "medicationRequests", "Device": "devices"}


def patient_view(bundle: dict[str, Any] | None = None, *, extra: int = 40,
                 instance: str = "5f1e7a52-6c1d-4d8e-9f3a-0d2b7c9e4a12") -> dict[str, Any]:
    """A CDS Hooks patient-view request whose prefetch holds the record,
    searchset by searchset, as an EHR sends it (``extra`` unrelated resources
    of the types the service prefetches)."""
    bundle = copy.deepcopy(bundle or sample())
    subject = _patient_ref(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    rng = random.Random(11)
    resources += [r for r in unrelated(extra * 2, subject, date(2026, 11, 22), rng, prefix="pv")
                  if r["resourceType"] in _PREFETCH_KEYS][:extra]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    prefetch: dict[str, Any] = {"patient": patient}
    for key in _PREFETCH_KEYS.values():
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for r in resources:
        key = _PREFETCH_KEYS.get(r["resourceType"])
        if key:
            prefetch[key]["entry"].append({"fullUrl": f"urn:bench:{r['resourceType']}/{r['id']}", "resource": r})
    return {"hook": "patient-view", "hookInstance": instance,
            "context": {"userId": "Practitioner/bench", "patientId": subject.split("/", 1)[1]},
            "prefetch": prefetch}
