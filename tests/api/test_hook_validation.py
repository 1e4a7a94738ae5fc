"""Request validation against the CDS Hooks conformance fixtures and by hand.

The fixtures are read in place from ../shared/external (never copied).
Valid requests are answered 200; invalid ones 4xx with an OperationOutcome
whose diagnostics name the offending place.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import (
    CAUDA_EQUINA,
    HOOK_FIXTURES,
    OSEL,
    OSIGN,
    PV,
    assert_cards_response,
    fixture_json,
    hook_request,
    observation,
    prefetch,
)

SERVICE = {"patient-view": PV, "order-select": OSEL, "order-sign": OSIGN}

GOOD = ["cdshooks/cdshooks-request-patient-view-good.json",
        "cdshooks/cdshooks-request-order-select-good.json",
        "cdshooks/cdshooks-request-order-sign-good.json"]

# fixture -> (service hook, the places of its defects, as the FHIR validator's
# outcome files list them); the answer must name one of them.
BAD = {
    "cdshooks/cdshooks-request-patient-view-bad.json": (
        "patient-view", ("prefetch.item1", "prefetch.item2", "context.patientId", "context.encounterId")),
    "cdshooks/cdshooks-request-order-select-bad.json": (
        "order-select", ("prefetch.item1", "context.patientId", "context.encounterId", "context.selections[0]")),
    "cdshooks/cdshooks-request-order-sign-bad-1.json": (
        "order-sign", ("context.patientId", "prefetch.item1", "context.draftOrders.entry[0]")),
    "cdshooks/cdshooks-request-order-sign-bad-2.json": ("order-sign", ("prefetch.item1", "context.patientId")),
    # a discovery document posted as a request: no hook, no hookInstance, no context
    "cdshooks/cdshooks-request-order-select-extensions.json": ("order-select", ("body",)),
}


def _issue(response) -> dict:
    assert response.json["resourceType"] == "OperationOutcome"
    issue = response.json["issue"][0]
    assert issue["severity"] in ("error", "fatal") and issue["code"] and issue["diagnostics"]
    return issue


@pytest.mark.parametrize("name", GOOD)
def test_valid_fixture_is_answered_200(client, name):
    request = fixture_json(HOOK_FIXTURES / name)
    response = client.post(f"/cds-services/{SERVICE[request['hook']]}", request)
    assert response.status_code == 200, response.json
    assert_cards_response(response.json)


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_fixture_is_refused_naming_the_place(client, name):
    hook, places = BAD[name]
    response = client.post(f"/cds-services/{SERVICE[hook]}", fixture_json(HOOK_FIXTURES / name))
    assert response.status_code == 400, response.json
    diagnostics = _issue(response)["diagnostics"]
    assert diagnostics.split(":")[0].split(" ")[0] in places, diagnostics


def test_spec_example_with_fhir_access_over_plain_http_is_412_without_contacting_the_server(client):
    # The CDS Hooks spec's own example: valid, but its fhirServer is plain
    # http on a remote host; the service will not send a token there, and
    # the prefetch lacks most templates: 412, at once.
    request = fixture_json(HOOK_FIXTURES / "cdshooks-request-pv-good.json")
    response = client.post(f"/cds-services/{PV}", request)
    assert response.status_code == 412
    assert _issue(response)["diagnostics"].startswith("fhirServer")


def test_prefetch_value_wrapped_as_a_bundle_entry_is_refused_naming_the_key(client):
    body = hook_request(pre=prefetch(item1={"response": {"status": "200 OK"}, "resource": {
        "resourceType": "Patient", "id": "p1"}}))
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 400
    assert _issue(response)["diagnostics"].startswith("prefetch.item1")


@pytest.mark.parametrize("mutate, place", [
    (lambda b: b.update(hook="order-sign"), "hook"),
    (lambda b: b.pop("hookInstance"), "body"),
    (lambda b: b["context"].pop("patientId"), "context"),
    (lambda b: b["context"].update(userId="dr-1"), "context.userId"),
    (lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                           "scope": "patient/*.read", "subject": "cds"}), "body"),
    (lambda b: b.update(surprise=1), "body"),
    (lambda b: b.update(prefetch=[]), "prefetch"),
    (lambda b: b["prefetch"].update(observations={"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "Observation", "id": "x", "code": {"coding": [{"system": "http://snomed.info/sct",
                                                                       "code": "23056005"}]},
        "valueBoolean": "yes"}}]}), "prefetch.observations.entry[0]"),
])
def test_malformed_requests_are_400_naming_the_field(client, mutate, place):
    body = hook_request(pre=prefetch(*CAUDA_EQUINA))
    mutate(body)
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 400, response.json
    assert _issue(response)["diagnostics"].startswith(place)


def test_order_select_needs_draft_orders_and_selections(client):
    response = client.post(f"/cds-services/{OSEL}", hook_request("order-select", pre=prefetch()))
    assert response.status_code == 400
    assert "required" in _issue(response)["diagnostics"]


def test_a_prefetched_patient_other_than_the_context_patient_is_refused(client):
    body = hook_request(pre=prefetch(patient={"resourceType": "Patient", "id": "someone-else"}))
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 400
    assert _issue(response)["diagnostics"].startswith("prefetch.patient")


def test_resources_of_another_patient_are_refused(client):
    body = hook_request(pre=prefetch(observation("o1", "267064002", "2026-11-20", patient="p2")))
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 400
    assert "Observation/o1" in _issue(response)["diagnostics"]


def test_unknown_service_is_404(client):
    response = client.post("/cds-services/no-such-service", hook_request(pre=prefetch()))
    assert response.status_code == 404
    assert _issue(response)["code"] == "not-found"


def test_null_prefetch_values_mean_no_data_not_missing_data(client):
    # Every template answered (null = nothing there): evaluated, no 412.
    response = client.post(f"/cds-services/{PV}", hook_request(pre=prefetch()))
    assert response.status_code == 200


def test_missing_patient_with_no_way_to_fetch_it_is_412(client):
    pre = prefetch(*CAUDA_EQUINA)
    del pre["patient"]
    response = client.post(f"/cds-services/{PV}", hook_request(pre=pre))
    assert response.status_code == 412
    assert _issue(response)["code"] == "incomplete"


def test_a_bad_fhir_authorization_is_named_without_echoing_the_token(client):
    body = hook_request(pre=prefetch())
    body["fhirServer"] = "https://ehr.example.org/fhir"
    body["fhirAuthorization"] = {"access_token": "tok-" + "x" * 9000, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds"}
    response = client.post(f"/cds-services/{PV}", body)
    assert response.status_code == 400
    diagnostics = _issue(response)["diagnostics"]
    assert diagnostics.startswith("fhirAuthorization.access_token") and "tok-" not in diagnostics
