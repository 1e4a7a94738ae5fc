"""Bad input gets a clear error naming the place; odd but legal input works."""

from __future__ import annotations

import json

import pytest

from cds.errors import InputError, MalformedJson, PayloadTooLarge, UnknownUnit
from cds.fhir import MAX_RESOURCES, parse_json
from tests.conftest import AS_OF, FINDING, actions, bundle, finding, quantity


def evaluate(mini, data):
    return mini.evaluate(data, AS_OF)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", None),
    (b'"a string"', None),
    (b"{\"resourceType\": \"Bundle\", \"entry\": [NaN]}", "malformed JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
])
def test_malformed_bodies(mini, body, message):
    with pytest.raises(InputError) as caught:
        evaluate(mini, parse_json(body))
    if message:
        assert message in caught.value.diagnostics


def test_array_or_string_instead_of_a_resource(mini):
    with pytest.raises(InputError, match="expected a JSON object"):
        evaluate(mini, [bundle()])
    with pytest.raises(InputError, match="expected a JSON object"):
        evaluate(mini, "Bundle")


def test_deep_nesting_is_refused_cleanly():
    with pytest.raises(MalformedJson, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


def test_body_over_the_limit_is_refused_before_parsing():
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        parse_json(b" " * (50 * 1024 * 1024))


def test_bundle_with_too_many_entries(mini):
    huge = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Basic"}}] * 100_000}
    with pytest.raises(PayloadTooLarge, match=f"limit is {MAX_RESOURCES}"):
        evaluate(mini, huge)


def test_unknown_resource_type_names_the_entry(mini):
    data = bundle(finding("a", "saddle-anesthesia"), {"resourceType": "Spaceship", "id": "x"})
    with pytest.raises(InputError) as caught:
        evaluate(mini, data)
    assert caught.value.diagnostics == "entry[2]: unknown resourceType 'Spaceship'"


def test_observation_without_code(mini):
    data = bundle({"resourceType": "Observation", "id": "nc", "status": "final", "valueBoolean": True})
    with pytest.raises(InputError, match=r"entry\[1\] Observation/nc: Observation has no code"):
        evaluate(mini, data)


def test_quantity_in_an_unlisted_unit_is_refused_not_compared(mini):
    data = bundle(quantity("gfr", "98979-8", 0.4, "mL/s"))
    with pytest.raises(UnknownUnit) as caught:
        evaluate(mini, data)
    assert "Observation/gfr" in caught.value.diagnostics and "'mL/s'" in caught.value.diagnostics


def test_units_are_converted_before_rules_see_them(mini):
    _, facts = mini.facts(bundle(quantity("a1c", "4548-4", 48, "mmol/mol")), AS_OF)
    (a1c,) = [f for f in facts if f.type == "measurement"]
    assert a1c.fields["value"] == pytest.approx(6.54, abs=0.01) and a1c.fields["unit"] == "%"


@pytest.mark.parametrize("bad, field", [
    ({"effectiveDateTime": "yesterday"}, "effectiveDateTime"),
    ({"effectiveDateTime": "2026-02-30"}, "effectiveDateTime"),
    ({"valueBoolean": "true"}, "valueBoolean"),
    ({"id": "x" * 65}, "id"),
    ({"code": {"coding": [{"system": FINDING, "code": "saddle-anesthesia"}], "text": "x" * 20_000}}, "code.text"),
])
def test_wrong_types_and_bad_dates_name_the_field(mini, bad, field):
    data = bundle({**finding("o", "saddle-anesthesia"), **bad})
    with pytest.raises(InputError) as caught:
        evaluate(mini, data)
    assert f"field {field}" in caught.value.diagnostics and "entry[1]" in caught.value.diagnostics


def test_quantity_value_as_string_is_refused(mini):
    obs = quantity("gfr", "98979-8", "25", "mL/min/{1.73_m2}")
    with pytest.raises(InputError, match="valueQuantity.value: must be a finite number"):
        evaluate(mini, bundle(obs))


def test_reference_to_a_resource_not_in_the_record(mini):
    report = {"resourceType": "DiagnosticReport", "id": "dr", "status": "final",
              "code": {"coding": [{"system": "http://spine-cds.local/fhir/CodeSystem/procedure", "code": "mri"}]},
              "result": [{"reference": "Observation/missing"}]}
    with pytest.raises(InputError, match=r"DiagnosticReport/dr result\[0\]: result reference 'Observation/missing'"):
        evaluate(mini, bundle(report))


def test_two_patients_in_one_record_are_refused(mini):
    data = bundle({"resourceType": "Patient", "id": "p2"})
    with pytest.raises(InputError, match="more than one patient"):
        evaluate(mini, data)


def test_resource_of_another_patient_is_refused(mini):
    other = {**finding("o", "saddle-anesthesia"), "subject": {"reference": "Patient/someone-else"}}
    with pytest.raises(InputError, match="is not the record's patient"):
        evaluate(mini, bundle(other))


def test_status_rules(mini):
    erroneous = {**finding("o1", "saddle-anesthesia"), "status": "entered-in-error"}
    cancelled = {**finding("o2", "urinary-retention"), "status": "cancelled"}
    refuted = {"resourceType": "Condition", "id": "c1",
               "code": {"coding": [{"system": FINDING, "code": "fecal-incontinence"}]},
               "verificationStatus": {"coding": [{"code": "refuted"}]}}
    result = evaluate(mini, bundle(erroneous, cancelled, refuted))
    assert result["triage"] == "none"


def test_resolved_condition_is_history(mini):
    resolved = {"resourceType": "Condition", "id": "c1",
                "code": {"coding": [{"system": FINDING, "code": "radicular-leg-pain"}]},
                "clinicalStatus": {"coding": [{"code": "resolved"}]}, "onsetDateTime": "2026-11-01"}
    _, facts = mini.facts(bundle(resolved), AS_OF)
    assert [f.fields["status"] for f in facts if f.type == "finding"] == ["history"]


def test_prefetch_shape_with_null_operation_outcome_and_single_resources(mini):
    prefetch = {"patient": {"resourceType": "Patient", "id": "p1"}, "conditions": None,
                "meds": {"resourceType": "OperationOutcome", "issue": []},
                "obs": {"resourceType": "Bundle", "type": "searchset",
                        "entry": [{"fullUrl": "http://ehr/fhir/Observation/x",
                                   "resource": finding("x", "saddle-anesthesia")}]}}
    result = evaluate(mini, prefetch)
    assert result["patient"] == "Patient/p1" and result["triage"] == "emergency"


def test_urn_uuid_references_and_entries_without_ids(mini):
    pid = "urn:uuid:7d1c0a3e-0000-4000-8000-000000000001"
    obs = finding("x", "saddle-anesthesia", subject={"reference": pid})
    del obs["id"]
    data = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pid, "resource": {"resourceType": "Patient"}},
        {"fullUrl": "urn:uuid:7d1c0a3e-0000-4000-8000-000000000002", "resource": obs}]}
    result = evaluate(mini, data)
    assert result["patient"] == pid
    assert result["recommendations"][0]["evidence"] == ["urn:uuid:7d1c0a3e-0000-4000-8000-000000000002"]


def test_facts_dated_after_as_of_are_not_yet_known(mini):
    later = finding("x", "saddle-anesthesia", on="2026-12-01")
    assert evaluate(mini, bundle(later))["triage"] == "none"


def test_unknown_codes_and_unused_resources_are_ignored(mini):
    data = bundle({"resourceType": "Observation", "id": "bp", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                   "valueString": "anything at all"},
                  {"resourceType": "Encounter", "id": "e", "status": ["not", "validated"]})
    assert evaluate(mini, data)["triage"] == "none"


def test_huge_string_values_do_not_reach_the_engine(mini):
    data = bundle(finding("x", "radicular-leg-pain", note=[{"text": "y" * 1_000_000}]))
    assert "stay-active" in actions(evaluate(mini, data))


def test_error_is_an_operation_outcome():
    from cds.errors import operation_outcome

    with pytest.raises(InputError) as caught:
        parse_json(b"{")
    outcome = operation_outcome(caught.value)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "structure" and outcome["issue"][0]["diagnostics"]
    assert json.dumps(outcome)
