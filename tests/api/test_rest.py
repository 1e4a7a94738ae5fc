"""The REST endpoints: /evaluate (JSON and FHIR), /rulesets, health, metrics, OpenAPI."""

from __future__ import annotations

import json
import subprocess
import sys

from cds.api import schemas
from tests.api.conftest import CAUDA_EQUINA, NOW, PV, hook_request, prefetch
from tests.conftest import ROOT, bundle, finding

CAUDA_BUNDLE = bundle(finding("o1", "urinary-retention", on="2026-11-20"),
                      finding("o2", "radicular-leg-pain", on="2026-11-10"))


def test_evaluate_answers_the_contracts_evaluation(client, bundled):
    response = client.post("/evaluate?as_of=2026-11-22", CAUDA_BUNDLE)
    assert response.status_code == 200, response.json
    schemas.validate(schemas.EVALUATION, response.json)
    assert response.json == bundled.evaluate(CAUDA_BUNDLE, NOW.date())
    assert response.json["triage"] == "emergency"


def test_evaluate_gives_the_same_answer_as_the_command_line(client, tmp_path):
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(CAUDA_BUNDLE))
    cli = subprocess.run([sys.executable, "-m", "cds.cli", "evaluate", str(source), "--as-of", "2026-11-22",
                          "--format", "json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert client.post("/evaluate?as_of=2026-11-22", CAUDA_BUNDLE).json == json.loads(cli.stdout)


def test_evaluate_defaults_to_the_request_date(client):
    assert client.post("/evaluate", CAUDA_BUNDLE).json["asOf"] == NOW.date().isoformat()


def test_evaluate_is_audited_on_the_rest_channel(client, audit):
    client.post("/evaluate?as_of=2026-11-22", CAUDA_BUNDLE)
    record = audit.evaluations[-1]
    assert record.channel == "rest" and record.triage == "emergency" and record.facts
    assert record.as_of == "2026-11-22" and len(record.input_sha256) == 64


def test_a_bad_as_of_is_400(client):
    response = client.post("/evaluate?as_of=22/11/2026", CAUDA_BUNDLE)
    assert response.status_code == 400
    assert response.json["issue"][0]["diagnostics"].startswith("as_of")


def test_evaluate_as_fhir_guidance_response_with_a_request_group(client):
    response = client.post("/evaluate?as_of=2026-11-22", CAUDA_BUNDLE,
                           headers={"Accept": "application/fhir+json"})
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    guidance = response.json
    schemas.validate(schemas.GUIDANCE_RESPONSE, guidance)
    assert guidance["status"] == "success" and guidance["subject"] == {"reference": "Patient/p1"}
    group = next(r for r in guidance["contained"] if r["resourceType"] == "RequestGroup")
    assert guidance["result"] == {"reference": f"#{group['id']}"}
    assert group["priority"] == "stat"
    mri = next(a for a in group["action"] if any(c.get("code") == "mri-lumbar"
                                                 for c in a["code"][0]["coding"]))
    proposed = next(r for r in guidance["contained"] if f"#{r['id']}" == mri["resource"]["reference"])
    assert proposed["resourceType"] == "ServiceRequest" and proposed["status"] == "draft"
    assert mri["documentation"][0]["url"].startswith("http")


def test_evaluate_reports_bad_fhir_naming_the_entry(client):
    bad = bundle({"resourceType": "Observation", "id": "o1", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": "267064002"}]}, "valueBoolean": "true"})
    response = client.post("/evaluate", bad)
    assert response.status_code == 400
    assert response.json["issue"][0]["diagnostics"].startswith("entry[1]")


def test_rulesets_lists_the_loaded_ruleset_with_its_rules(client, bundled):
    body = client.get("/rulesets").json
    schemas.validate(schemas.RULESETS, body)
    [ruleset] = body["rulesets"]
    assert ruleset["sha256"] == bundled.ruleset.sha256 and ruleset["version"] == bundled.ruleset.version
    ids = {r["id"] for r in ruleset["rules"]}
    assert "red-flags/cauda-equina-emergency" in ids and len(ids) == len(bundled.ruleset.rules)


def test_healthz_and_readyz(client):
    assert client.get("/healthz", token=False).json == {"status": "ok"}
    ready = client.get("/readyz", token=False).json
    assert ready["status"] == "ready" and ready["checks"]["replay_store"] == "ok"


def test_metrics_count_requests_evaluations_by_triage_and_firings_per_rule(client):
    client.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA)))
    client.post("/evaluate?as_of=2026-11-22", CAUDA_BUNDLE)
    client.get("/cds-services", token=False)
    text = client.get("/metrics", token=False).data.decode()
    assert 'cds_http_requests_total{endpoint="/cds-services/<service_id>",method="POST",status="200"} 1.0' in text
    assert 'cds_http_requests_total{endpoint="/cds-services",method="GET",status="401"} 1.0' in text
    assert 'cds_http_request_duration_seconds_bucket{endpoint="/evaluate"' in text
    assert 'cds_evaluations_total{channel="cds-hooks",triage="emergency"} 1.0' in text
    assert 'cds_evaluations_total{channel="rest",triage="emergency"} 1.0' in text
    assert 'cds_rule_firings_total{rule="red-flags/cauda-equina-emergency"} 2.0' in text
    assert "cds_auth_failures_total 1.0" in text


def test_openapi_describes_every_endpoint_with_the_request_schemas(client):
    doc = client.get("/openapi.json", token=False).json
    assert doc["openapi"].startswith("3.1")
    paths = set(doc["paths"])
    assert {"/cds-services", f"/cds-services/{PV}", f"/cds-services/{PV}/feedback", "/evaluate", "/rulesets",
            "/healthz", "/readyz", "/metrics", "/openapi.json"} <= paths
    body = doc["paths"][f"/cds-services/{PV}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == json.loads(json.dumps(schemas.hook_request("patient-view")))
    assert doc["servers"] == [{"url": "http://cds.test"}]


def test_the_audit_read_api_is_served_with_an_audit_database_and_auditor_tokens(bundled, tmp_path):
    from cds.api import create_app
    from cds.audit import AuditStore
    from cds.audit.auditors import hash_token
    from tests.api.conftest import Caller, app_config

    store = AuditStore.open(f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    tokens = tmp_path / "auditors.txt"
    tokens.write_text(f"sha256:{hash_token('auditor-secret')} Jane Roe\n")
    try:
        caller = Caller(create_app(app_config(EVALUATOR=bundled, AUDIT=store,
                                              CDS_AUDITOR_TOKENS_FILE=str(tokens))), None)
        assert caller.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA))).status_code == 200
        assert caller.get("/audit/verify").status_code == 401
        listed = caller.get("/audit/evaluations", headers={"Authorization": "Bearer auditor-secret"})
        assert listed.status_code == 200 and len(listed.json["items"]) == 1
    finally:
        store.close()
