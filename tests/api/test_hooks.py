"""CDS Hooks service calls: cards exactly per the spec, built from the evaluation."""

from __future__ import annotations

import json
import re

from tests.api.conftest import (
    CAUDA_EQUINA,
    OSEL,
    OSIGN,
    PAMA,
    PV,
    assert_cards_response,
    condition,
    draft_order,
    draft_orders,
    fixture_json,
    hook_request,
    observation,
    prefetch,
)
from tests.conftest import LOINC

MRI_LUMBAR_CPT = "72148"
EMG_CPT = "95886"


def _suggested_codes(card: dict) -> set[tuple[str, str]]:
    out = set()
    for suggestion in card.get("suggestions", []):
        for action in suggestion["actions"]:
            resource = action.get("resource") or {}
            concept = resource.get("code") or resource.get("medicationCodeableConcept") or \
                (resource.get("category") or [{}])[0]
            out |= {(c["system"], c["code"]) for c in concept.get("coding", [])}
    return out


def _topic(card: dict) -> str:
    return card["source"]["topic"]["code"]


def test_discovery_lists_one_service_per_hook_with_prefetch_for_everything_the_rules_read(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["hook"]: s for s in response.json["services"]}
    assert set(services) == {"patient-view", "order-select", "order-sign"}
    for service in services.values():
        assert service["id"] and service["title"] and service["description"]
        queried = {query.split("?")[0].split("/")[0] for query in service["prefetch"].values()}
        assert queried >= {"Patient", "Observation", "Condition", "MedicationStatement", "MedicationRequest",
                           "Procedure", "DiagnosticReport", "Device"}
        assert all("{{context.patientId}}" in q for q in service["prefetch"].values())


def test_cauda_equina_is_a_critical_card_first_with_an_mri_suggestion(client, audit):
    response = client.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA)))
    assert response.status_code == 200, response.json
    cards = assert_cards_response(response.json)
    first = cards[0]
    assert first["indicator"] == "critical"
    assert len(first["summary"]) <= 140
    assert (LOINC, "24968-0") in _suggested_codes(first)  # MRI lumbar spine, the action's standard code
    mri = next(s for s in first["suggestions"] for a in s["actions"]
               if a["resource"]["code"]["coding"][-1]["code"] == "mri-lumbar")
    resource = mri["actions"][0]["resource"]
    assert resource["resourceType"] == "ServiceRequest"
    assert resource["status"] == "draft" and resource["priority"] == "stat"
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert first["selectionBehavior"] == "any"
    # detail explains why: the derivation in words, down to the record, and the guideline
    assert "Urinary retention" in first["detail"] and "Observation/o-retention" in first["detail"]
    assert re.search(r"\[[^\]]+\]\(https?://", first["detail"])
    assert first["source"]["label"] and first["source"]["url"].startswith("http")
    assert first["overrideReasons"] and all(r["display"] for r in first["overrideReasons"])
    assert first["links"] and all(link["type"] == "absolute" for link in first["links"])
    # red flags first: no card after a non-critical one is critical
    indicators = [c["indicator"] for c in cards]
    assert indicators == sorted(indicators, key=["critical", "warning", "info"].index)


def test_card_uuids_are_recorded_through_the_audit_sink_before_the_answer(client, audit):
    body = hook_request(pre=prefetch(*CAUDA_EQUINA))
    cards = client.post(f"/cds-services/{PV}", body).json["cards"]
    record = audit.evaluations[-1]
    assert record.channel == "cds-hooks" and record.hook == "patient-view"
    assert record.hook_instance == body["hookInstance"]
    assert record.client == "https://ehr.test/" and record.jti
    assert [c["uuid"] for c in record.cards] == [c["uuid"] for c in cards]
    assert record.triage == "emergency"
    assert all(audit.card_exists(c["uuid"]) for c in cards)


def test_the_cards_carry_the_same_answers_as_the_evaluation_core(client, bundled):
    body = hook_request(pre=prefetch(*CAUDA_EQUINA))
    cards = client.post(f"/cds-services/{PV}", body).json["cards"]
    from tests.api.conftest import NOW

    evaluation = bundled.evaluate(body, NOW.date())
    proposed = {s["actions"][-1]["resource"]["code"]["coding"][-1]["code"]
                for c in cards for s in c.get("suggestions", [])
                if s["actions"][-1].get("resource", {}).get("resourceType") == "ServiceRequest"}
    expected = {r["action"] for r in evaluation["recommendations"]
                if bundled.ruleset.terminology.actions[r["action"]]["resource"] == "ServiceRequest"}
    assert proposed == expected


def test_sciatica_without_red_flags_gets_no_critical_card(client):
    body = hook_request(pre=prefetch(observation("o-sciatica", "23056005", "2026-11-10")))
    cards = assert_cards_response(client.post(f"/cds-services/{PV}", body).json)
    assert cards, "acute sciatica has a conservative pathway"
    assert all(c["indicator"] != "critical" for c in cards)
    topics = {_topic(c) for c in cards} | {a for c in cards for a in _suggested_actions(c)}
    assert "stay-active" in topics


def _suggested_actions(card: dict) -> set[str]:
    return {a["resource"]["code"]["coding"][-1]["code"] if "code" in a.get("resource", {}) else
            (a.get("resource", {}).get("medicationCodeableConcept") or
             (a.get("resource", {}).get("category") or [{}])[0]).get("coding", [{}])[-1].get("code")
            for s in card.get("suggestions", []) for a in s["actions"] if a["type"] == "create"}


def test_a_safety_alert_is_a_warning_card_without_suggestions(client):
    egfr = {"resourceType": "Observation", "id": "o-egfr", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "33914-3"}]}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2026-11-15",
            "valueQuantity": {"value": 22, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org",
                              "code": "mL/min/{1.73_m2}"}}
    body = hook_request(pre=prefetch(observation("o-sciatica", "23056005", "2026-11-10"), egfr))
    cards = assert_cards_response(client.post(f"/cds-services/{PV}", body).json)
    alert = next(c for c in cards if _topic(c) == "avoid-nsaid")
    assert alert["indicator"] == "warning"
    assert "suggestions" not in alert
    assert "eGFR" in alert["detail"] or "egfr" in alert["detail"].lower()
    assert "nsaid" not in {a for c in cards for a in _suggested_actions(c)}


def test_no_data_worth_a_card_answers_an_empty_card_list(client):
    response = client.post(f"/cds-services/{PV}", hook_request(pre=prefetch()))
    assert response.status_code == 200
    assert response.json == {"cards": []}


def _pama_request_with_record(days_of_pain_onset: str) -> dict:
    request = fixture_json(PAMA / "scenario-01-outbound-request.json")
    request["prefetch"] = prefetch(
        conditions=(condition("c-lbp", "279039007", days_of_pain_onset, patient="MRI-59879846"),),
        patient={"resourceType": "Patient", "id": "MRI-59879846", "birthDate": "1961-05-04"})
    return request


def test_connectathon_order_select_lumbar_ct_for_early_low_back_pain_is_not_indicated(client):
    request = _pama_request_with_record("2026-11-12")  # ten days of low back pain, no red flags
    cards = assert_cards_response(client.post(f"/cds-services/{OSEL}", request).json)
    warning = next(c for c in cards if _topic(c) == "order-not-indicated")
    assert warning["indicator"] == "warning"
    assert warning["selectionBehavior"] == "at-most-one"
    remove, replace = warning["suggestions"]
    assert remove["actions"] == [{"type": "delete", "description": remove["actions"][0]["description"],
                                  "resourceId": "ServiceRequest/example-MRI-59879846"}]
    assert replace["actions"][0]["type"] == "delete"
    assert [a["type"] for a in replace["actions"][1:]] and all(a["type"] == "create" for a in replace["actions"][1:])
    assert replace["isRecommended"] is True
    assert "CT" in warning["summary"]


def test_connectathon_request_without_any_record_is_412(client):
    request = fixture_json(PAMA / "scenario-01-outbound-request.json")
    response = client.post(f"/cds-services/{OSEL}", request)
    assert response.status_code == 412
    assert response.json["resourceType"] == "OperationOutcome"
    assert "prefetch" in response.json["issue"][0]["diagnostics"]


def test_an_indicated_order_gets_no_warning(client):
    # Cauda equina: the drafted lumbar MRI is exactly what the guidelines want.
    body = hook_request("order-sign", pre=prefetch(*CAUDA_EQUINA),
                        draftOrders=draft_orders(draft_order("sr-mri", MRI_LUMBAR_CPT)))
    cards = assert_cards_response(client.post(f"/cds-services/{OSIGN}", body).json)
    assert cards[0]["indicator"] == "critical"
    assert "order-not-indicated" not in {_topic(c) for c in cards}


def test_emg_drafted_before_three_weeks_is_not_indicated(client):
    body = hook_request("order-select", pre=prefetch(observation("o-sciatica", "23056005", "2026-11-15")),
                        selections=["ServiceRequest/sr-emg"],
                        draftOrders=draft_orders(draft_order("sr-emg", EMG_CPT)))
    cards = assert_cards_response(client.post(f"/cds-services/{OSEL}", body).json)
    warning = next(c for c in cards if _topic(c) == "order-not-indicated")
    deletes = [a for s in warning["suggestions"] for a in s["actions"] if a["type"] == "delete"]
    assert {a["resourceId"] for a in deletes} == {"ServiceRequest/sr-emg"}


def test_order_sign_lumbar_mri_after_six_weeks_of_sciatica_is_not_refused(client):
    body = hook_request("order-sign", pre=prefetch(observation("o-sciatica", "23056005", "2026-08-01")),
                        draftOrders=draft_orders(draft_order("sr-mri", MRI_LUMBAR_CPT)))
    cards = assert_cards_response(client.post(f"/cds-services/{OSIGN}", body).json)
    assert "order-not-indicated" not in {_topic(c) for c in cards}


def test_cards_answer_is_json_with_no_nulls(client):
    response = client.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA)))
    assert response.mimetype == "application/json"
    assert "null" not in json.dumps(response.json["cards"])


def test_the_audit_record_says_which_items_and_rules_each_card_stands_for(client, audit):
    request = _pama_request_with_record("2026-11-12")
    cards = client.post(f"/cds-services/{OSEL}", request).json["cards"]
    record = audit.evaluations[-1]
    kept = {c["uuid"]: c for c in record.cards}
    order_card = next(c for c in cards if _topic(c) == "order-not-indicated")
    view = kept[order_card["uuid"]]
    assert view["actions"][0] == "order-not-indicated" and len(view["actions"]) >= 2  # and its alternative
    assert any(rule.startswith("orders/") for rule in view["rules"])
    assert view["suggestions"] == [s["uuid"] for s in order_card["suggestions"]]
    items = {i["id"] for i in record.recommendations + record.alerts}
    assert all(set(c["items"]) <= items and c["items"] for c in record.cards)
    # every evaluation item is on exactly one card
    assert sorted(i for c in record.cards for i in c["items"]) == sorted(items)
