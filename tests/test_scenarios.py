"""The clinical specification: every scenario in fhir_samples/, and the
safety properties that must hold whatever else a record contains."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.domain.facts import urgency_rank
from cds.evaluation.scenarios import default_samples_dir, run_all, run_scenario, scenario_files

SCENARIOS = scenario_files(default_samples_dir())
RED_FLAG_CONCEPTS = {"urinary-retention", "fecal-incontinence", "saddle-anesthesia", "new-sexual-dysfunction"}


def load(pair):
    bundle, expected = pair
    return json.loads(bundle.read_text()), json.loads(expected.read_text())


def test_there_are_enough_scenarios():
    assert len(SCENARIOS) >= 40


@pytest.mark.parametrize("pair", SCENARIOS, ids=[b.stem for b, _ in SCENARIOS])
def test_scenario(bundled, pair):
    problems = run_scenario(bundled, *pair).problems
    assert problems == []


def test_every_rule_is_fired_by_some_scenario(bundled):
    _, unfired = run_all(bundled)
    assert unfired == []


@pytest.mark.parametrize("pair", SCENARIOS, ids=[b.stem for b, _ in SCENARIOS])
def test_every_suggestion_is_explained_down_to_the_record(bundled, bundled_ruleset, pair):
    data, spec = load(pair)
    evaluation = bundled.evaluate(data, date.fromisoformat(spec["asOf"]))
    resources = set()
    for entry in data.get("entry", []):
        r = entry["resource"]
        if r.get("id"):
            resources.add(f"{r['resourceType']}/{r['id']}")
        if entry.get("fullUrl"):
            resources.add(entry["fullUrl"])
    rule_ids = {r.id for r in bundled_ruleset.rules}
    for item in evaluation["recommendations"] + evaluation["alerts"]:
        assert item["rule"] in rule_ids
        assert item["guideline"]["key"] in bundled_ruleset.guidelines and item["guideline"]["url"]
        assert item["evidence"], item["action"]
        assert set(item["evidence"]) <= resources
        for node in item["because"]:
            _assert_tree(node, rule_ids, resources)


def _assert_tree(node, rule_ids, resources):
    if "resource" in node:
        assert node["resource"] in resources and "because" not in node
        return
    assert node["rule"] in rule_ids and node["because"], node
    for child in node["because"]:
        _assert_tree(child, rule_ids, resources)


# -- safety properties ------------------------------------------------------

URGENT = [(b, e) for b, e in SCENARIOS
          if json.loads(e.read_text())["expect"].get("triage") in ("emergency", "urgent")]

unrelated = st.one_of(
    st.builds(lambda i: {"resourceType": "Encounter", "id": f"noise-enc-{i}", "status": "finished"},
              st.integers(0, 10_000)),
    st.builds(lambda i, v: {"resourceType": "Observation", "id": f"noise-bp-{i}", "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                            "valueQuantity": {"value": v, "unit": "mm[Hg]"}},
              st.integers(0, 10_000), st.integers(60, 220)),
    st.builds(lambda i: {"resourceType": "AllergyIntolerance", "id": f"noise-al-{i}"}, st.integers(0, 10_000)),
    st.builds(lambda i: {"resourceType": "Practitioner", "id": f"noise-pr-{i}"}, st.integers(0, 10_000)),
)


def _triage(evaluator, data, spec):
    return evaluator.evaluate(data, date.fromisoformat(spec["asOf"]))["triage"]


def test_there_are_red_flag_scenarios_for_the_properties():
    assert len(URGENT) >= 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000), noise=st.lists(unrelated, max_size=25, unique_by=lambda r: r["id"]),
       duplicate=st.booleans(), position=st.integers(0, 10_000))
def test_extra_or_duplicated_resources_never_hide_a_red_flag(bundled, pick, noise, duplicate, position):
    data, spec = load(URGENT[pick % len(URGENT)])
    before = _triage(bundled, data, spec)
    mutated = copy.deepcopy(data)
    entries = mutated["entry"]
    if duplicate and entries:
        twin = copy.deepcopy(entries[position % len(entries)])
        if twin["resource"]["resourceType"] != "Patient":
            twin.pop("fullUrl", None)
            twin["resource"]["id"] = f"dup-{position}"
            entries.append(twin)
    for resource in noise:
        entries.insert(position % (len(entries) + 1), {"resource": resource})
    assert urgency_rank(_triage(bundled, mutated, spec)) <= urgency_rank(before)


def _red_flag_entries(data):
    out = []
    for index, entry in enumerate(data.get("entry", [])):
        r = entry["resource"]
        codes = {c.get("code") for c in r.get("code", {}).get("coding", [])}
        if r["resourceType"] == "Observation" and codes & RED_FLAG_CONCEPTS and r.get("valueBoolean", True):
            out.append(index)
    return out


@pytest.mark.parametrize("pair", SCENARIOS, ids=[b.stem for b, _ in SCENARIOS])
def test_removing_a_red_flag_never_raises_and_adding_one_never_lowers_urgency(bundled, pair):
    data, spec = load(pair)
    before = urgency_rank(_triage(bundled, data, spec))
    for index in _red_flag_entries(data):
        fewer = copy.deepcopy(data)
        del fewer["entry"][index]
        assert urgency_rank(_triage(bundled, fewer, spec)) >= before
    more = copy.deepcopy(data)
    patient = next((e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Patient"), None)
    observation = {"resourceType": "Observation", "id": "added-red-flag", "status": "final",
                   "code": {"coding": [{"system": "http://spine-cds.local/fhir/CodeSystem/finding",
                                        "code": "saddle-anesthesia"}]},
                   "valueBoolean": True, "effectiveDateTime": spec["asOf"]}
    if patient and patient.get("id"):
        observation["subject"] = {"reference": f"Patient/{patient['id']}"}
    more["entry"].append({"resource": observation})
    after = urgency_rank(_triage(bundled, more, spec))
    assert after <= before and after == urgency_rank("emergency")


def test_samples_directory_has_pairs():
    for bundle, expected in SCENARIOS:
        assert Path(bundle).is_file(), f"{expected.name} has no bundle"
