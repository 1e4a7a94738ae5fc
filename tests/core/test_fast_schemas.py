"""The compiled validator (cds.fhir.fast_schemas) against marshmallow itself.

Whenever the fast path answers, its answer must be marshmallow's, and
marshmallow must have accepted the resource. Resources are generated from
the declared schemas, mixing valid values with the invalid ones clients
send (nulls, strings for numbers, "true" for booleans, bad dates, overlong
text, too many items, unknown fields).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields

from cds.evaluation.scenarios import default_samples_dir, scenario_files
from cds.fhir import read_record
from cds.fhir.fast_schemas import compile_all
from cds.fhir.schemas import (
    MAX_TEXT,
    SCHEMAS,
    Boolean,
    FhirDate,
    Integer,
    Number,
    Text,
)

FAST = compile_all(SCHEMAS)

junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                 st.just(float("nan")), st.just(float("inf")), st.just([]), st.just({}), st.just("true"))
dates = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["2024", "2024-02", "2024-02-30", "2024-13-01", "2024-01-01T10:00:00Z",
                     "2024-01-01T10:00:00.5+02:00", "2024-1-1", "yesterday", "2024-01-01\n"]))
texts = st.one_of(st.text(max_size=20), st.just("x" * MAX_TEXT), st.just("x" * (MAX_TEXT + 1)),
                  st.just("a" * 512), st.just("a" * 513),
                  st.sampled_from(["Patient/1", "abc-1.2", "bad id!", "ok\n", "a" * 64, "a" * 65]))


@st.composite
def value_for(draw, field: fields.Field, depth: int = 0):
    """Mostly well-typed values (so marshmallow often accepts), one in eight junk."""
    if draw(st.integers(0, 7)) == 0:
        return draw(junk)
    if isinstance(field, fields.Nested):
        return draw(resource_for(field.schema, depth + 1))
    if isinstance(field, fields.List):
        high = next((v.max for v in field.validators if getattr(v, "max", None)), None)
        if high is not None and draw(st.booleans()):
            # The boundary: exactly the maximum, or one more.
            return [draw(value_for(field.inner, depth))] * (high + draw(st.integers(0, 1)))
        return draw(st.lists(value_for(field.inner, depth), max_size=3))
    if isinstance(field, Text):
        return draw(texts)
    if isinstance(field, Number):
        return draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers()))
    if isinstance(field, Integer):
        return draw(st.one_of(st.integers(), st.floats()))
    if isinstance(field, Boolean):
        return draw(st.booleans())
    if isinstance(field, FhirDate):
        return draw(dates)
    raise AssertionError(f"no strategy for {type(field).__name__}")


@st.composite
def resource_for(draw, schema, depth: int = 0):
    out = {}
    if depth > 3:
        return out
    for name, field in schema.load_fields.items():
        if field.required or draw(st.booleans()):
            out[name] = draw(value_for(field, depth))
    if draw(st.booleans()):
        out["extension"] = [{"url": "x"}]
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SCHEMAS)).flatmap(
    lambda t: st.tuples(st.just(t), resource_for(SCHEMAS[t]))))
def test_fast_answer_is_marshmallows(case):
    resource_type, resource = case
    resource = {**resource, "resourceType": resource_type}
    fast = FAST[resource_type](resource)
    try:
        slow = SCHEMAS[resource_type].load(resource)
    except ValidationError:
        assert fast is None, "the fast path accepted what marshmallow refuses"
        return
    accepted.append(fast is not None)
    if fast is not None:
        assert fast == slow


accepted: list[bool] = []


def test_the_fast_path_answers_most_valid_resources():
    """Run after the property test: most resources marshmallow accepted were
    decided on the fast path (else it would be correct but useless)."""
    assert len(accepted) > 50 and sum(accepted) / len(accepted) > 0.9


def test_every_sample_takes_the_fast_path():
    """Otherwise the fast path would be correct but useless."""
    seen = 0
    for bundle, _ in scenario_files(default_samples_dir()):
        for entry in read_record(json.loads(bundle.read_text())).entries:
            if entry.type in FAST:
                loaded = FAST[entry.type](entry.resource)
                assert loaded is not None, f"{bundle.name} {entry.reference}"
                assert loaded == SCHEMAS[entry.type].load(entry.resource)
                seen += 1
    assert seen > 200


def test_an_invalid_resource_still_gets_marshmallows_error():
    from datetime import date

    import pytest

    from cds.errors import InputError
    from cds.evaluation import Evaluator
    from cds.knowledge import load_ruleset

    bundle = {"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "valueQuantity": {"value": "7.1", "unit": "%"}}}]}
    with pytest.raises(InputError) as caught:
        Evaluator(load_ruleset()).evaluate(bundle, date(2026, 11, 22))
    assert "valueQuantity.value" in str(caught.value) and "finite number" in str(caught.value)
    assert "entry[0]" in str(caught.value) and "Observation/o1" in str(caught.value)
