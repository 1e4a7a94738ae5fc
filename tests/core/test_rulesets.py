"""A bad ruleset file is refused whole, naming file, rule and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds.errors import RulesetError
from cds.knowledge import load_ruleset
from tests.conftest import MINI


@pytest.fixture
def rs(tmp_path) -> Path:
    target = tmp_path / "rs"
    shutil.copytree(MINI, target)
    return target


def edit_rule(rs: Path, module: str, index: int, **changes) -> None:
    path = rs / "modules" / f"{module}.yaml"
    doc = yaml.safe_load(path.read_text())
    rule = doc["rules"][index]
    for key, value in changes.items():
        if value is None:
            rule.pop(key, None)
        else:
            rule[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def refused(rs: Path) -> RulesetError:
    with pytest.raises(RulesetError) as caught:
        load_ruleset(rs)
    return caught.value


def test_the_bundled_ruleset_loads():
    ruleset = load_ruleset()
    assert ruleset.rules and len(ruleset.sha256) == 64


def test_unknown_field_names_file_rule_and_field(rs):
    edit_rule(rs, "radicular", 1, urgencyy="x")
    error = refused(rs)
    assert (error.file, error.rule, error.field) == (
        "modules/radicular.yaml", "radicular/acute-conservative", "urgencyy")


def test_missing_guideline_and_unknown_guideline_key(rs):
    edit_rule(rs, "red-flags", 0, guideline=None)
    assert refused(rs).field == "guideline"
    edit_rule(rs, "red-flags", 0, guideline=["NOPE"])
    error = refused(rs)
    assert "unknown guideline key 'NOPE'" in error.diagnostics and error.rule == "red-flags/cauda-equina-symptom"


def test_misspelt_concept_is_caught_at_load(rs):
    edit_rule(rs, "radicular", 0, when=[{"fact": "finding", "as": "pain",
                                          "where": {"concept": "radicular-leg-pian", "status": "present"}}])
    error = refused(rs)
    assert "unknown finding concept 'radicular-leg-pian'" in error.diagnostics
    assert error.field == "when[0].where.concept"


def test_field_a_fact_type_does_not_have(rs):
    edit_rule(rs, "safety", 0, when=[{"fact": "measurement", "where": {"concept": "egfr", "valeu": {"lt": 30}}}])
    assert "has no field 'valeu'" in refused(rs).diagnostics


def test_reference_to_an_unbound_alias(rs):
    edit_rule(rs, "radicular", 0, derive=[{"type": "sciatica", "with": {"days": "$nobody.days"}}])
    assert "no earlier pattern binds" in refused(rs).diagnostics


def test_unknown_action_and_wrong_category(rs):
    edit_rule(rs, "radicular", 1, recommend=[{"action": "avoid-nsaid", "urgency": "routine",
                                              "rationale": "An alert is not a suggestion."}])
    assert "is an alert" in refused(rs).diagnostics


def test_a_negation_cycle_is_refused(rs):
    path = rs / "modules" / "chain.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["rules"].append({"id": "chain/loop", "title": "A loop through absence", "guideline": ["CKS"],
                         "evidence_note": "Derives red-flag from the absence of red-flag.",
                         "when": [{"fact": "finding"}, {"not": {"fact": "red-flag"}}],
                         "derive": [{"type": "red-flag", "with": {"flag": "loop"}}]})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert "absence of facts they (indirectly) produce" in refused(rs).diagnostics


def test_bad_yaml_names_line(rs):
    (rs / "modules" / "chain.yaml").write_text("module: chain\nrules: [\n")
    error = refused(rs)
    assert error.file == "modules/chain.yaml" and "line" in error.diagnostics


def test_unlisted_module_file_is_refused(rs):
    shutil.copy(rs / "modules" / "chain.yaml", rs / "modules" / "extra.yaml")
    assert "not listed" in refused(rs).diagnostics


def test_terminology_errors_name_the_field(rs):
    path = rs / "terminology.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["measurements"]["egfr"]["value"] = "qty"
    path.write_text(yaml.safe_dump(doc))
    error = refused(rs)
    assert error.file == "terminology.yaml" and error.field == "measurements.egfr.value.value"


def test_content_hash_covers_every_file(rs):
    before = load_ruleset(rs).sha256
    path = rs / "guidelines.yaml"
    path.write_text(path.read_text().replace("2021", "2022", 1))
    assert load_ruleset(rs).sha256 != before


def _module_of(rules: list[dict]) -> str:
    return yaml.safe_dump({"module": "chain", "description": "synthetic", "rules": rules}, sort_keys=False)


def _rule(i: int, consumes: str | None) -> dict:
    # Distinct conditions: durable also refuses one identical condition feeding over 256 rules.
    when = [{"fact": consumes}] if consumes else [
        {"fact": "finding", "where": {"concept": "radicular-leg-pain", "days": {"gte": -i}}}]
    return {"id": f"chain/r{i}", "title": f"synthetic rule {i}", "guideline": ["CKS"],
            "evidence_note": "Synthetic rule to exercise the durable size limit.",
            "when": when, "derive": [{"type": f"t{i}"}]}


def test_a_stratum_over_the_engine_limit_is_split_between_independent_rules(rs):
    from cds.evaluation import Evaluator
    from tests.conftest import AS_OF, bundle, finding

    (rs / "modules" / "chain.yaml").write_text(_module_of([_rule(i, None) for i in range(450)]))
    ruleset = load_ruleset(rs)
    # 450 rules: over the rule limit, and one finding meets every condition,
    # so the stratum is split into rulesets of at most 48 such conditions.
    assert len([c for c in ruleset.compiled if c["stratum"] == 0]) == 10
    result = Evaluator(ruleset).evaluate(bundle(finding("p", "radicular-leg-pain")), AS_OF)
    fired = {f["rule"] for f in result["firings"]}
    assert {f"chain/r{i}" for i in range(450)} <= fired


def test_rules_that_feed_each_other_beyond_the_limit_are_refused(rs):
    chain = [_rule(0, None)] + [_rule(i, f"t{i - 1}") for i in range(1, 402)]
    (rs / "modules" / "chain.yaml").write_text(_module_of(chain))
    assert "group of 402 rules that feed each other" in refused(rs).diagnostics


def test_one_fact_meeting_too_many_conditions_of_one_group_is_refused(rs):
    """Regression: durable corrupted memory when one fact met 64 distinct
    conditions of one ruleset; rules that must share a session are refused."""
    head = {"id": "chain/head", "title": "synthetic head", "guideline": ["CKS"],
            "evidence_note": "Synthetic rule to exercise the durable condition limit.",
            "when": [{"fact": "finding", "where": {"concept": "saddle-anesthesia"}}], "derive": [{"type": "hub"}]}
    wide = [{**_rule(i, None), "when": [{"fact": "hub"}, *_rule(i, None)["when"]]} for i in range(60)]
    (rs / "modules" / "chain.yaml").write_text(_module_of([head, *wide]))
    assert "distinct conditions one fact could meet" in refused(rs).diagnostics
