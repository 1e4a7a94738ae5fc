"""Logs are structlog JSON lines with a request id, and carry no PHI."""

from __future__ import annotations

import json

from tests.api.conftest import PV, hook_request, observation, prefetch

NAME_FAMILY, NAME_GIVEN = "Zyxwvut", "Quorra"
BIRTH_DATE = "1953-07-19"
MRN = "MRN-778899-QX"
PATIENT_ID = "pt-4f9e2c"
RESOURCE_ID = "obs-unique-7a3e"


def _phi_request() -> dict:
    patient = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": BIRTH_DATE, "gender": "female",
               "name": [{"family": NAME_FAMILY, "given": [NAME_GIVEN]}],
               "identifier": [{"system": "urn:mrn", "value": MRN}]}
    egfr = {"resourceType": "Observation", "id": "obs-egfr-91", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
            "subject": {"reference": f"Patient/{PATIENT_ID}"}, "effectiveDateTime": "2026-11-15",
            "valueQuantity": {"value": 23.456, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org",
                              "code": "mL/min/{1.73_m2}"}}
    pre = prefetch(observation(RESOURCE_ID, "267064002", "2026-11-20", patient=PATIENT_ID),
                   observation("obs-sciatica-2", "23056005", "2026-11-11", patient=PATIENT_ID), egfr,
                   patient=patient)
    return hook_request(pre=pre, patientId=PATIENT_ID)


def test_logs_are_json_with_a_request_id_and_no_phi(client, capsys):
    capsys.readouterr()
    body = _phi_request()
    ok = client.post(f"/cds-services/{PV}", body, headers={"X-Request-ID": "req-123"})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "req-123"
    bad = dict(body, context={**body["context"], "patientId": "Patient/" + PATIENT_ID})
    assert client.post(f"/cds-services/{PV}", bad).status_code == 400
    client.post("/evaluate", body["prefetch"])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "requests were logged"
    request_lines = [line for line in lines if line["event"] in ("request", "cards", "evaluation",
                                                                  "request_refused")]
    assert request_lines and all(line.get("request_id") for line in request_lines)
    assert any(line["request_id"] == "req-123" for line in lines)
    assert {"cards", "request", "request_refused", "evaluation"} <= {line["event"] for line in lines}
    text = json.dumps(lines)
    for secret in (NAME_FAMILY, NAME_GIVEN, BIRTH_DATE, MRN, PATIENT_ID, RESOURCE_ID, "23.456", "obs-egfr-91",
                   body["hookInstance"], "Practitioner/dr-1"):
        assert secret not in text, f"{secret!r} leaked into the logs"


def test_a_request_id_that_could_smuggle_data_is_replaced(client, capsys):
    capsys.readouterr()
    response = client.get("/healthz", headers={"X-Request-ID": "Quorra Zyxwvut <script>"})
    assert response.headers["X-Request-ID"] != "Quorra Zyxwvut <script>"
    assert "Quorra" not in capsys.readouterr().err
