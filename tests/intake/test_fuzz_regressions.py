"""Bugs the OpenAPI fuzz of the intake led to (tests/api/test_openapi_fuzz.py): each was a 500, one of
them after the resource had been committed. Each test is named after its bug."""

from __future__ import annotations

from tests.intake.conftest import SCIATICA, observation, patient, put_entry


def _diagnostics(response) -> str:  # type: ignore[no-untyped-def]
    assert response.json["resourceType"] == "OperationOutcome"
    return response.json["issue"][0]["diagnostics"]  # type: ignore[no-any-return]


def test_superscript_digit_in_a_version_or_limit_was_a_500(intake) -> None:
    # "²".isdigit() is True but int("²") raises: vread and the worklist limit answered 500.
    intake.put(patient())
    for path in ("/fhir/Patient/p1/_history/%C2%B2", "/worklist?limit=%C2%B2",
                 "/fhir/Patient/p1/_history/%D9%A1", "/fhir/Patient/p1/_history/1%0A"):
        response = intake.send("GET", path)
        assert response.status_code == 400, path
        assert "must be" in _diagnostics(response)
    assert intake.send("GET", "/fhir/Patient/p1/_history/1").status_code == 200
    assert intake.send("GET", "/worklist?limit=5").status_code == 200


def test_meta_that_is_not_an_object_was_a_500(intake) -> None:
    # The server merges its versionId into meta: {**"x"} raised TypeError.
    for meta in ("x", [1], 5):
        response = intake.put({**patient(), "meta": meta})
        assert response.status_code == 400, meta
        assert _diagnostics(response) == "body.meta: meta must be an object"
    in_bundle = intake.transaction(put_entry({**patient(), "meta": "x"}))
    assert in_bundle.status_code == 400 and "entry[0].resource.meta" in _diagnostics(in_bundle)
    assert intake.send("GET", "/fhir/Patient/p1").status_code == 404  # nothing stored
    assert intake.put({**patient(), "meta": {"source": "ehr"}}).status_code == 201


def test_id_with_a_trailing_newline_was_stored_then_a_500(intake) -> None:
    # FHIR_ID.match("p1\n") matched ($ matches before a final newline): the resource was committed under
    # "p1\n", then setting its Location header raised. Now refused before anything is read or written.
    created = intake.send("PUT", "/fhir/Patient/p9%0A", {"resourceType": "Patient"})
    assert created.status_code == 400
    posted = intake.post({**patient(), "id": "p9\n"})
    assert posted.status_code == 400 and "id" in _diagnostics(posted)
    assert intake.send("GET", "/fhir/Patient/p9%0A").status_code == 404
    assert intake.worklist("?all=1")["patients"] == []
    subscription = {"resourceType": "Subscription", "status": "active", "criteria": "Patient",
                    "channel": {"type": "rest-hook", "endpoint": "https://pager.example.org/hook",
                                "header": ["Authorization: Bearer t"]}}
    assert intake.send("PUT", "/fhir/Subscription/s1%0A", subscription).status_code == 400
    assert intake.send("GET", "/fhir/Subscription/s1%0A").status_code == 404
    # a subject naming "Patient/p1\n" does not name Patient/p1
    intake.put(patient())
    wrong = intake.put(observation("o-1", SCIATICA, subject={"reference": "Patient/p1\n"}))
    assert wrong.status_code == 422
    assert intake.send("GET", "/fhir/Observation/o-1").status_code == 404


def test_subscription_endpoint_with_an_unbalanced_ipv6_bracket_was_a_500(intake) -> None:
    # urlsplit raises ValueError on "https://[x/"; check_endpoint let it through.
    for endpoint in ("https://[x/hook", "https://a]/hook"):
        response = intake.post({"resourceType": "Subscription", "status": "active", "criteria": "Patient",
                                "channel": {"type": "rest-hook", "endpoint": endpoint,
                                            "header": ["Authorization: Bearer t"]}})
        assert response.status_code == 422, endpoint
        assert "Subscription.channel.endpoint" in _diagnostics(response)
