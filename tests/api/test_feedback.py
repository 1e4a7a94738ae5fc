"""CDS Hooks feedback: accepted and overridden outcomes stored against known cards."""

from __future__ import annotations

import uuid

from cds.api import schemas
from tests.api.conftest import CAUDA_EQUINA, PV, hook_request, prefetch


def _cards(client):
    return client.post(f"/cds-services/{PV}", hook_request(pre=prefetch(*CAUDA_EQUINA))).json["cards"]


def test_accepted_suggestions_are_stored_against_the_card(client, audit):
    card = _cards(client)[0]
    suggestion = card["suggestions"][0]["uuid"]
    body = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
                          "outcomeTimestamp": "2026-11-22T12:01:00Z"}]}
    response = client.post(f"/cds-services/{PV}/feedback", body)
    assert response.status_code == 200, response.json
    schemas.validate(schemas.FEEDBACK_RESPONSE, response.json)
    stored = audit.feedback[-1]
    assert stored.card == card["uuid"] and stored.outcome == "accepted"
    assert stored.accepted_suggestions == [suggestion]
    assert stored.client == "https://ehr.test/" and stored.user == "ehr-client"  # the token's subject
    assert stored.outcome_at.isoformat() == "2026-11-22T12:01:00+00:00"


def test_an_override_keeps_its_reason_and_comment(client, audit):
    card = _cards(client)[0]
    reason = card["overrideReasons"][0]
    body = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                          "overrideReason": {"reason": reason, "userComment": "MRI done this morning"},
                          "outcomeTimestamp": "2026-11-22T12:02:00Z"}]}
    assert client.post(f"/cds-services/{PV}/feedback", body).status_code == 200
    stored = audit.feedback[-1]
    assert stored.outcome == "overridden" and stored.override_reason == reason
    assert stored.user_comment == "MRI done this morning"


def test_feedback_for_an_unknown_card_is_refused_and_nothing_is_stored(client, audit):
    card = _cards(client)[0]
    body = {"feedback": [
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T12:02:00Z"},
        {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-22T12:02:00Z"}]}
    response = client.post(f"/cds-services/{PV}/feedback", body)
    assert response.status_code == 404
    assert response.json["issue"][0]["diagnostics"].startswith("feedback[1].card")
    assert audit.feedback == []


def test_accepted_without_suggestions_is_malformed(client):
    card = _cards(client)[0]
    body = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-22T12:02:00Z"}]}
    response = client.post(f"/cds-services/{PV}/feedback", body)
    assert response.status_code == 400
    assert response.json["issue"][0]["diagnostics"].startswith("feedback[0]")


def test_feedback_to_an_unknown_service_is_404(client):
    body = {"feedback": [{"card": "x", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T12:02:00Z"}]}
    assert client.post("/cds-services/nope/feedback", body).status_code == 404
