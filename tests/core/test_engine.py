"""The engine adapter under the failure modes seen in durable-rules."""

from __future__ import annotations

import json
import threading

import pytest

from cds.errors import RuleActionError, SafetyViolation
from cds.evaluation import Evaluator
from cds.evaluation.session import Session
from cds.knowledge import load_ruleset
from tests.conftest import AS_OF, MINI, actions, alert_actions, bundle, finding, quantity

CES = bundle(finding("ces", "saddle-anesthesia"), finding("sci", "radicular-leg-pain", side="left"))
ACUTE = bundle(finding("sci", "radicular-leg-pain", side="left"))
RENAL = bundle(finding("sci", "radicular-leg-pain"), quantity("gfr", "98979-8", 22, "mL/min/{1.73_m2}"))
BILATERAL = bundle(finding("l", "radicular-leg-pain", side="left"), finding("r", "radicular-leg-pain", side="right"))
EMPTY = bundle()


def test_red_flag_suppresses_conservative_path_whatever_the_order(mini):
    """durable decides an absence when a match forms; strata keep it sound.

    Regression: without strata, "sciatica and no red flag" fired even when
    the red flag was derived first, and even when asserted before actions ran.
    """
    for ordered in (CES, bundle(*[e["resource"] for e in reversed(CES["entry"][1:])])):
        result = mini.evaluate(ordered, AS_OF)
        assert actions(result) == {"mri-lumbar": "emergency", "emergency-spine-surgery": "emergency"}
        assert result["triage"] == "emergency"


def test_conservative_path_without_red_flags(mini):
    result = mini.evaluate(ACUTE, AS_OF)
    assert actions(result) == {"stay-active": "self-care", "nsaid": "self-care", "defer-imaging": "self-care"}
    assert result["triage"] == "self-care"


def test_safety_rule_withdraws_nsaid_and_explains(mini):
    result = mini.evaluate(RENAL, AS_OF)
    assert "nsaid" not in actions(result)
    assert "stay-active" in actions(result)
    (alert,) = [a for a in result["alerts"] if a["action"] == "avoid-nsaid" and "topic" not in a]
    assert set(alert["evidence"]) == {"Observation/sci", "Observation/gfr"}
    assert alert["triage"] if False else result["triage"] == "self-care"  # alerts do not raise triage


def test_join_on_reference_and_three_level_chain(mini):
    result = mini.evaluate(BILATERAL, AS_OF)
    (alert,) = [a for a in result["alerts"] if a.get("topic") == "test-chain"]
    node = alert["because"][0]
    assert node["type"] == "bilateral-sciatica" and node["rule"] == "chain/bilateral"
    assert {leaf["resource"] for leaf in node["because"]} == {"Observation/l", "Observation/r"}


def test_irrelevant_and_unmatched_facts_never_hide_a_red_flag(mini):
    noise = [quantity(f"a1c{i}", "4548-4", 5.0 + i / 10, "%") for i in range(30)]
    noise += [{"resourceType": "Encounter", "id": f"e{i}"} for i in range(30)]
    result = mini.evaluate(bundle(*noise, finding("ces", "urinary-retention"), *noise[:5]), AS_OF)
    assert result["triage"] == "emergency"


def test_identical_readings_are_legal(mini):
    same = finding("ces", "saddle-anesthesia")
    twin = dict(same, id="ces2")
    result = mini.evaluate(bundle(same, twin, same), AS_OF)
    assert result["triage"] == "emergency"
    (mri,) = [r for r in result["recommendations"] if r["action"] == "mri-lumbar"]
    assert mri["evidence"] == ["Observation/ces"]  # the first derivation is the one shown


def test_exception_in_a_rule_action_fails_loudly_naming_the_rule(mini, monkeypatch):
    original = Session.on_match

    def broken(self, match):
        if self.ruleset.rules[match.rule_index].id == "red-flags/cauda-equina-symptom":
            raise ZeroDivisionError("boom")
        return original(self, match)

    monkeypatch.setattr(Session, "on_match", broken)
    with pytest.raises(RuleActionError) as caught:
        mini.evaluate(CES, AS_OF)
    assert caught.value.rule == "red-flags/cauda-equina-symptom"
    monkeypatch.undo()
    # The engine is still usable and its sessions were cleaned up.
    assert mini.evaluate(CES, AS_OF)["triage"] == "emergency"


def test_withdrawing_an_emergency_without_replacement_is_refused(tmp_path):
    import shutil

    shutil.copytree(MINI, tmp_path / "rs")
    (tmp_path / "rs" / "modules" / "safety.yaml").write_text((tmp_path / "rs" / "modules" / "safety.yaml").read_text()
                                                            + """
  - id: safety/bad-withdrawal
    title: A rule that would hide a red flag
    guideline: [CKS]
    evidence_note: Exists to prove the engine refuses to drop an emergency suggestion.
    when:
      - fact: recommendation
        as: rec
        where: {action: mri-lumbar}
    supersede:
      target: rec
      rationale: This must never be allowed to hide an emergency.
""")
    evaluator = Evaluator(load_ruleset(tmp_path / "rs"))
    with pytest.raises(SafetyViolation, match="emergency recommendation mri-lumbar"):
        evaluator.evaluate(CES, AS_OF)


def test_sixteen_threads_give_the_sequential_answers(mini):
    records = [CES, ACUTE, RENAL, BILATERAL, EMPTY]
    expected = [json.dumps(mini.evaluate(r, AS_OF), sort_keys=True) for r in records]
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(200):
                k = (i + offset) % len(records)
                got = json.dumps(mini.evaluate(records[k], AS_OF), sort_keys=True)
                if got != expected[k]:
                    mismatches.append(f"thread {offset} record {k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert not mismatches


def test_two_versions_of_a_ruleset_coexist_in_one_process(tmp_path, mini):
    import shutil

    shutil.copytree(MINI, tmp_path / "rs")
    manifest = tmp_path / "rs" / "ruleset.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    newer = Evaluator(load_ruleset(tmp_path / "rs"))
    assert newer.ruleset.sha256 != mini.ruleset.sha256
    assert newer.evaluate(CES, AS_OF)["ruleset"]["version"] == "1.0.1"
    assert mini.evaluate(CES, AS_OF)["ruleset"]["version"] == "1.0.0"
    assert "avoid-nsaid" in alert_actions(newer.evaluate(RENAL, AS_OF))


def _topics(result):
    return {a.get("topic") for a in result["alerts"]}


def test_absence_of_an_input_fact_holds_whatever_the_order(mini):
    """Regression: durable judged 'no saddle anaesthesia' before that input
    fact was asserted, when both were findings asserted in input order."""
    pain, saddle = finding("p", "radicular-leg-pain"), finding("s", "saddle-anesthesia")
    assert "absence-test" in _topics(mini.evaluate(bundle(pain), AS_OF))
    assert "absence-test" not in _topics(mini.evaluate(bundle(pain, saddle), AS_OF))
    assert "absence-test" not in _topics(mini.evaluate(bundle(saddle, pain), AS_OF))


def test_join_in_a_pattern_with_in_is_respected(mini):
    """Regression: durable ignored '$pain.side' beside an 'in' condition."""
    pain = finding("p", "radicular-leg-pain", side="left")
    right, left = finding("s", "saddle-anesthesia", side="right"), finding("s", "saddle-anesthesia", side="left")
    assert "join-test" not in _topics(mini.evaluate(bundle(pain, right), AS_OF))
    assert "join-test" in _topics(mini.evaluate(bundle(pain, left), AS_OF))
