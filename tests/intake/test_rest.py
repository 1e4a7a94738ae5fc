"""The FHIR REST intake: creates, updates, versions, idempotence, and bad input named per FHIR."""

from __future__ import annotations

import json

from tests.intake.conftest import (
    RETENTION,
    SCIATICA,
    evaluations,
    observation,
    patient,
    post_entry,
    put_entry,
)


def test_put_creates_then_updates_with_versions_location_and_etag(intake) -> None:
    created = intake.put(patient())
    assert created.status_code == 201
    assert created.headers["Location"].endswith("/fhir/Patient/p1/_history/1")
    assert created.headers["ETag"] == 'W/"1"'
    assert created.json["meta"]["versionId"] == "1"
    first = intake.put(observation("o-sci", SCIATICA))
    assert first.status_code == 201
    second = intake.put(observation("o-sci", SCIATICA, "2026-11-19"))
    assert second.status_code == 200 and second.headers["ETag"] == 'W/"2"'
    assert intake.send("GET", "/fhir/Observation/o-sci").json["effectiveDateTime"] == "2026-11-19"
    assert intake.send("GET", "/fhir/Observation/o-sci/_history/1").json["effectiveDateTime"] == "2026-11-20"
    assert intake.send("GET", "/fhir/Observation/o-sci/_history/3").status_code == 404


def test_a_repeated_put_or_post_stores_nothing_new_and_evaluates_once(intake, store) -> None:
    intake.put(patient())
    assert intake.put(observation("o-ret", RETENTION)).status_code == 201
    count = len(evaluations(store))
    again = intake.put(observation("o-ret", RETENTION))
    assert again.status_code == 200 and again.headers["ETag"] == 'W/"1"'
    posted = intake.post(observation("o-ret", RETENTION))
    assert posted.status_code == 200 and posted.headers["ETag"] == 'W/"1"'
    assert len(evaluations(store)) == count
    assert intake.send("GET", "/fhir/Observation/o-ret/_history/2").status_code == 404


def test_post_without_id_and_if_none_exist_is_created_once(intake) -> None:
    intake.put(patient())
    body = observation("x", SCIATICA)
    del body["id"]
    body["identifier"] = [{"system": "urn:ehr:obs", "value": "4711"}]
    header = {"If-None-Exist": "identifier=urn:ehr:obs|4711"}
    first = intake.post(body, headers=header)
    assert first.status_code == 201
    rid = first.json["id"]
    retry = intake.post(body, headers=header)
    assert retry.status_code == 200 and retry.json["id"] == rid
    assert retry.headers["Location"].endswith(f"/Observation/{rid}/_history/1")


def test_if_match_must_name_the_current_version(intake) -> None:
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    stale = intake.put(observation("o-sci", SCIATICA, "2026-11-18"), headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json["issue"][0]["code"] == "conflict"
    assert "version 7" in stale.json["issue"][0]["diagnostics"]
    assert intake.send("GET", "/fhir/Observation/o-sci").json["effectiveDateTime"] == "2026-11-20"
    fresh = intake.put(observation("o-sci", SCIATICA, "2026-11-18"), headers={"If-Match": 'W/"1"'})
    assert fresh.status_code == 200 and fresh.headers["ETag"] == 'W/"2"'


def test_a_post_for_an_existing_id_with_other_content_is_a_conflict(intake) -> None:
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    answer = intake.post(observation("o-sci", SCIATICA, "2026-11-01"))
    assert answer.status_code == 409
    assert "PUT" in answer.json["issue"][0]["diagnostics"]


def test_resources_for_an_unknown_patient_are_refused_and_not_stored(intake, store) -> None:
    answer = intake.put(observation("o-ret", RETENTION, pid="nobody"))
    assert answer.status_code == 422
    issue = answer.json["issue"][0]
    assert issue["code"] == "not-found" and "Patient/nobody is not on record" in issue["diagnostics"]
    assert "body Observation/o-ret" in issue["diagnostics"]
    assert intake.send("GET", "/fhir/Observation/o-ret").status_code == 404
    assert evaluations(store, "Patient/nobody") == []


def test_a_resource_without_subject_or_moving_patient_is_refused(intake) -> None:
    intake.put(patient("p1"))
    intake.put(patient("p2"))
    orphan = observation("o-x", SCIATICA)
    del orphan["subject"]
    assert intake.put(orphan).status_code == 422
    intake.put(observation("o-sci", SCIATICA, pid="p1"))
    moved = intake.put(observation("o-sci", SCIATICA, pid="p2"))
    assert moved.status_code == 409 and "another patient" in moved.json["issue"][0]["diagnostics"]


def test_bad_fhir_is_400_naming_the_field(intake) -> None:
    intake.put(patient())
    bad = observation("o-bad", RETENTION, value="yes")
    answer = intake.put(bad)
    assert answer.status_code == 400
    assert "valueBoolean" in answer.json["issue"][0]["diagnostics"]
    assert intake.send("PUT", "/fhir/Observation/o-1", observation("o-2", SCIATICA)).status_code == 400
    assert intake.send("PUT", "/fhir/Observation/o-1", raw=b"{not json").status_code == 400
    unread = intake.send("POST", "/fhir/Encounter", {"resourceType": "Encounter", "status": "finished"})
    assert unread.status_code == 404 and unread.json["issue"][0]["code"] == "not-supported"
    assert intake.send("POST", "/fhir/Nonsense", {"resourceType": "Nonsense"}).status_code == 400


def test_a_transaction_applies_all_entries_and_resolves_urn_references(intake, store) -> None:
    obs = observation("ignored-id", RETENTION, pid="ignored")
    del obs["id"]
    obs["subject"] = {"reference": "urn:uuid:9b7c1f34-0000-4000-8000-000000000001"}
    pat = patient("p9")
    answer = intake.transaction(
        post_entry(pat, "urn:uuid:9b7c1f34-0000-4000-8000-000000000001"),
        post_entry(obs, "urn:uuid:9b7c1f34-0000-4000-8000-000000000002"),
        post_entry({"resourceType": "Encounter", "status": "finished"}))
    assert answer.status_code == 200, answer.json
    bundle = answer.json
    assert bundle["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "201 Created", "200 OK"]
    assert bundle["entry"][2]["response"]["outcome"]["issue"][0]["severity"] == "information"
    location = bundle["entry"][1]["response"]["location"]
    stored = intake.send("GET", "/fhir/" + location.rsplit("/_history", 1)[0]).json
    assert stored["subject"] == {"reference": "Patient/p9"}
    one = evaluations(store, "Patient/p9")
    assert len(one) == 1 and one[0]["triage"] == "emergency"


def test_one_bad_entry_rolls_back_the_whole_transaction(intake, store) -> None:
    before = store.head()
    answer = intake.transaction(put_entry(patient("p5")), put_entry(observation("o-ok", SCIATICA, pid="p5")),
                                put_entry(observation("o-bad", RETENTION, pid="p5", value="yes")))
    assert answer.status_code == 400
    assert answer.json["issue"][0]["diagnostics"].startswith("entry[2] Observation/o-bad")
    assert intake.send("GET", "/fhir/Patient/p5").status_code == 404
    assert intake.send("GET", "/fhir/Observation/o-ok").status_code == 404
    assert store.head() == before  # nothing evaluated, nothing recorded


def test_a_transaction_failing_a_version_check_late_stores_nothing(intake) -> None:
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    answer = intake.transaction(put_entry(observation("o-ret", RETENTION)),
                                put_entry(observation("o-sci", SCIATICA, "2026-11-01"), ifMatch='W/"4"'))
    assert answer.status_code == 412
    assert answer.json["issue"][0]["diagnostics"].startswith("entry[1] Observation/o-sci")
    assert intake.send("GET", "/fhir/Observation/o-ret").status_code == 404


def test_the_same_resource_twice_in_one_transaction_is_refused(intake) -> None:
    intake.put(patient())
    answer = intake.transaction(put_entry(observation("o-1", SCIATICA)), put_entry(observation("o-1", RETENTION)))
    assert answer.status_code == 400 and "twice" in answer.json["issue"][0]["diagnostics"]


def test_an_oversized_bundle_is_413_and_stores_nothing(intake) -> None:
    entries = [put_entry(patient("big"))] + [put_entry(observation(f"o-{i}", SCIATICA, pid="big"))
                                             for i in range(1000)]
    answer = intake.transaction(*entries)
    assert answer.status_code == 413 and answer.json["issue"][0]["code"] == "too-costly"
    assert intake.send("GET", "/fhir/Patient/big").status_code == 404


def test_a_batch_answers_each_entry_and_keeps_the_good_ones(intake) -> None:
    intake.put(patient())
    answer = intake.transaction(put_entry(observation("o-sci", SCIATICA)),
                                put_entry(observation("o-bad", RETENTION, value="yes")),
                                put_entry(observation("o-x", SCIATICA, pid="ghost")),
                                {"request": {"method": "DELETE", "url": "Observation/o-sci"}},
                                kind="batch")
    assert answer.status_code == 200
    statuses = [e["response"]["status"] for e in answer.json["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "422 Unprocessable Entity", "400 Bad Request"]
    assert "entry[1]" in answer.json["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert intake.send("GET", "/fhir/Observation/o-sci").status_code == 200
    assert intake.send("GET", "/fhir/Observation/o-bad").status_code == 404


def test_envelope_errors_are_fhir_errors(intake) -> None:
    assert intake.send("POST", "/fhir", {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert intake.send("POST", "/fhir", [1, 2]).status_code == 400
    assert intake.send("POST", "/fhir", raw=b"x" * 10, headers={}).status_code == 400
    wrong_type = intake.caller.http.post("/fhir", data=b"{}", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert wrong_type.json["resourceType"] == "OperationOutcome"
    assert intake.send("PUT", "/fhir/Observation/o-1", {"resourceType": "Observation", "id": "o-1"},
                       headers={"If-Match": "banana"}).status_code == 400


def test_a_client_cannot_reach_the_intake_without_a_valid_token(make_intake, trusted_clients_file, keys) -> None:
    from tests.api.conftest import BASE_URL
    from tests.intake.conftest import Intake

    app = make_intake(CDS_AUTH="on", CDS_TRUSTED_CLIENTS=str(trusted_clients_file),
                      CDS_PUBLIC_BASE_URL=BASE_URL).app
    secured = Intake(app, keys)
    assert secured.put(patient(), token=False).status_code == 401
    assert secured.send("GET", "/worklist", token=False).status_code == 401
    assert secured.put(patient()).status_code == 201
    assert secured.put(observation("o-ret", RETENTION)).status_code == 201
    # The record belongs to the client that posted it: the same ids without a client are another space.
    open_app = make_intake()
    assert open_app.send("GET", "/fhir/Patient/p1").status_code == 404
    assert json.dumps(secured.worklist()).count("Patient/p1") >= 1
