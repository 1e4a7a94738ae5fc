"""`cds audit export --format fhir`: AuditEvent per evaluation, Provenance per recommendation, valid FHIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.provenance import Provenance

from cds.audit import AuditStore
from cds.audit.recording import Caller
from cds.cli import main
from tests.audit.bundles import cauda_equina, sciatica

HOOK_INSTANCE = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"


def export(store: AuditStore, tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "audit.ndjson"
    url = store.engine.url.render_as_string(hide_password=False)
    schema = []
    if store.backend == "postgresql":
        with store.engine.connect() as conn:
            schema = ["--schema", conn.exec_driver_sql("SELECT current_schema()").scalar()]
    result = CliRunner().invoke(main, ["audit", "export", "--format", "fhir", "--database", url, *schema,
                                       "--output", str(out), *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_export_is_valid_fhir_and_says_who_what_why(store: AuditStore, record_bundle, tmp_path: Path) -> None:
    caller = Caller(channel="cds-hooks", client="https://ehr.example/iss", jti="jti-9", user="Practitioner/7",
                    hook="patient-view", hook_instance=HOOK_INSTANCE)
    first = record_bundle(sciatica("p1", egfr=25), caller)
    second = record_bundle(cauda_equina("p2"), caller)
    resources = export(store, tmp_path)
    events = [r for r in resources if r["resourceType"] == "AuditEvent"]
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    for resource in events:
        AuditEvent.model_validate(resource)
    for resource in provenances:
        Provenance.model_validate(resource)
    assert [e["id"] for e in events] == [first.record_id, second.record_id]
    n_items = sum(len(r.evaluation["recommendations"]) + len(r.evaluation["alerts"]) for r in (first, second))
    assert len(provenances) == n_items

    event = events[0]
    assert event["action"] == "E" and event["outcome"] == "0"
    requestor = next(a for a in event["agent"] if a["requestor"])
    assert requestor["who"] == {"reference": "Practitioner/7"}
    assert any(a["who"].get("type") == "Device" for a in event["agent"])
    assert any(a.get("altId") == "jti-9" and a["who"]["identifier"]["value"] == "https://ehr.example/iss"
               for a in event["agent"])
    whats = [e["what"] for e in event["entity"]]
    assert {"reference": "Patient/p1"} in whats
    ruleset = next(e for e in event["entity"] if e.get("name") == "ruleset")
    assert ruleset["type"]["code"] == "Library"
    assert {"type": "sha256", "valueString": first.evaluation["ruleset"]["sha256"]} in ruleset["detail"]
    hook = next(e for e in event["entity"] if e.get("name") == "hookInstance")
    assert hook["what"]["identifier"]["value"] == f"urn:uuid:{HOOK_INSTANCE}"
    fired = {e["name"] for e in event["entity"] if e["type"]["code"] == "PlanDefinition"}
    assert fired == {f["rule"] for f in first.evaluation["firings"]}

    mri = next(p for p in provenances if p["activity"]["coding"][0]["code"] == "mri-lumbar")
    assert mri["target"][0]["type"] == "ServiceRequest"
    assert mri["target"][0]["identifier"]["value"] == f"{second.record_id}/rec-mri-lumbar"
    sources = [e["what"]["reference"] for e in mri["entity"] if e["role"] == "source"]
    assert sources == second.evaluation["recommendations"][0]["evidence"]
    assert [e["role"] for e in mri["entity"]].count("derivation") == 1
    nsaid_alert = next(p for p in provenances if p["activity"]["coding"][0]["code"] == "avoid-nsaid")
    assert nsaid_alert["target"][0]["type"] == "DetectedIssue"


def test_a_failed_evaluation_exports_as_a_failed_audit_event(store: AuditStore, record_bundle,
                                                             tmp_path: Path) -> None:
    from cds.errors import InputError

    with pytest.raises(InputError):
        record_bundle({"resourceType": "Bundle", "entry": 5})
    [event] = export(store, tmp_path)
    AuditEvent.model_validate(event)
    assert event["outcome"] == "8" and "entry" in event["outcomeDesc"]


def test_export_by_period(store: AuditStore, record_bundle, tmp_path: Path) -> None:
    record_bundle(sciatica())
    assert export(store, tmp_path, "--since", "2999-01-01") == []
    assert len(export(store, tmp_path, "--until", "2999-01-01")) > 0
