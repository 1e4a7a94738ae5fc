"""Missing prefetch fetched from the client's FHIR server (a local test server
on loopback), with the bearer token, following search paging, bounded."""

from __future__ import annotations

import time

from tests.api.conftest import PV, assert_cards_response, hook_request, observation

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01", "gender": "female"}


def _request(server, *, token=None, pre=None):
    body = hook_request(pre=pre)
    body["fhirServer"] = server.base
    body["fhirAuthorization"] = {"access_token": token or server.token, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "cds-service"}
    return body


def _record(server):
    # Five observations: with two per page the red flag is on the last page.
    server.add(PATIENT,
               observation("o-a", "279039007", "2026-11-01"), observation("o-b", "23056005", "2026-11-10"),
               observation("o-c", "44077006", "2026-11-12"), observation("o-d", "91019004", "2026-11-13"),
               observation("o-retention", "267064002", "2026-11-20"))


def test_missing_prefetch_is_fetched_following_every_page(client, fhir_server):
    _record(fhir_server)
    response = client.post(f"/cds-services/{PV}", _request(fhir_server))
    assert response.status_code == 200, response.json
    cards = assert_cards_response(response.json)
    assert cards[0]["indicator"] == "critical"
    assert "Observation/o-retention" in cards[0]["detail"]
    paths = [p for p, _auth in fhir_server.requests]
    assert "/fhir/Patient/p1" in paths
    assert sum(p.startswith("/fhir/Observation?") for p in paths) == 3  # 5 results, 2 a page
    assert all(auth == f"Bearer {fhir_server.token}" for _p, auth in fhir_server.requests)


def test_only_the_templates_missing_from_prefetch_are_fetched(client, fhir_server):
    _record(fhir_server)
    pre = {"patient": PATIENT, "observations": None, "conditions": None, "devices": None}
    response = client.post(f"/cds-services/{PV}", _request(fhir_server, pre=pre))
    assert response.status_code == 200
    fetched = {p.split("?")[0].split("/")[2] for p, _a in fhir_server.requests}
    assert fetched == {"MedicationStatement", "MedicationRequest", "Procedure", "DiagnosticReport"}


def test_a_refused_token_is_412(client, fhir_server):
    _record(fhir_server)
    response = client.post(f"/cds-services/{PV}", _request(fhir_server, token="wrong-token"))
    assert response.status_code == 412
    assert "refused access" in response.json["issue"][0]["diagnostics"]


def test_a_patient_the_server_does_not_have_is_412(client, fhir_server):
    response = client.post(f"/cds-services/{PV}", _request(fhir_server))
    assert response.status_code == 412
    assert response.json["issue"][0]["diagnostics"].startswith("prefetch.patient")


def test_a_slow_server_is_given_up_on_in_bounded_time(client, fhir_server):
    _record(fhir_server)
    fhir_server.delay = 5.0  # the app's CDS_FHIR_TIMEOUT is 3 s
    started = time.monotonic()
    response = client.post(f"/cds-services/{PV}", _request(fhir_server))
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert elapsed < 4.5


def test_next_links_that_leave_the_server_are_not_followed(client, fhir_server):
    _record(fhir_server)
    fhir_server.next_host = "http://127.0.0.2:9/fhir"
    response = client.post(f"/cds-services/{PV}", _request(fhir_server))
    assert response.status_code == 412
    assert "leaves the server" in response.json["issue"][0]["diagnostics"]
    assert all(not p.startswith("http://127.0.0.2") for p, _a in fhir_server.requests)


def test_an_unreachable_server_is_412(client):
    body = hook_request()
    body["fhirServer"] = "http://127.0.0.1:1/fhir"
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds"}
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 412
    assert "could not be reached" in response.json["issue"][0]["diagnostics"]


def test_the_access_token_is_never_logged(client, fhir_server, capsys):
    _record(fhir_server)
    capsys.readouterr()
    client.post(f"/cds-services/{PV}", _request(fhir_server))
    client.post(f"/cds-services/{PV}", _request(fhir_server, token="wrong-token-zzz"))
    err = capsys.readouterr().err
    assert fhir_server.token not in err and "wrong-token-zzz" not in err
