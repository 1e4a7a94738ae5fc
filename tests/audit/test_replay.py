"""`cds audit replay`: what a candidate ruleset would have changed, per recorded evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cds.audit import AuditStore
from cds.audit.recording import evaluate_and_record
from cds.audit.replay import replay
from cds.cli import main
from cds.evaluation import Evaluator
from cds.knowledge import load_ruleset
from tests.audit.bundles import cards_for, cauda_equina, sciatica
from tests.audit.conftest import AS_OF, RULESET


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2: NSAIDs withdrawn below eGFR 45 (was 30), no 'defer imaging', staying active is routine."""
    root = tmp_path_factory.mktemp("candidate") / "ruleset"
    shutil.copytree(RULESET, root)
    manifest = root / "ruleset.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 2.0.0"))
    safety = root / "modules" / "safety.yaml"
    safety.write_text(safety.read_text().replace("value: {lt: 30}", "value: {lt: 45}"))
    radicular = root / "modules" / "radicular.yaml"
    text = radicular.read_text()
    start = text.index("      - action: defer-imaging")
    text = text[:start].rstrip() + "\n"
    text = text.replace("      - action: stay-active\n        urgency: self-care",
                        "      - action: stay-active\n        urgency: routine")
    radicular.write_text(text)
    return root


def record_three(store: AuditStore, evaluator: Evaluator) -> list[str]:
    return [evaluate_and_record(evaluator, store, json.dumps(b).encode(), AS_OF, make_cards=cards_for).record_id
            for b in (sciatica("p1"), sciatica("p2", egfr=40), cauda_equina("p3"))]


@pytest.mark.parametrize("mode", ["full", "facts"])
def test_replay_reports_added_removed_and_triage(make_store, evaluator, candidate: Path, mode: str) -> None:
    store = make_store(store_input=mode)
    ids = record_three(store, evaluator)
    report = replay(Evaluator(load_ruleset(candidate)), store.iter_evaluations(with_input=True))
    by_id = {c.evaluation: c for c in report.changes}
    assert report.replayed == 3 and {c.replayed_from for c in report.changes} == {"raw" if mode == "full" else "facts"}

    p1 = by_id[ids[0]]
    assert p1.removed == ["defer-imaging"] and p1.added == []
    assert p1.triage_before == "self-care" and p1.triage_after == "routine"
    assert p1.urgency_changed == [{"action": "stay-active", "before": "self-care", "after": "routine"}]
    p2 = by_id[ids[1]]
    assert p2.added == ["alert:avoid-nsaid"] and set(p2.removed) == {"defer-imaging", "nsaid"}
    assert not by_id[ids[2]].changed
    summary = report.summary()
    assert summary["changed"] == 2 and summary["triageChanges"] == {"self-care -> routine": 2}
    assert summary["recordedRulesets"] == {"audit-test 1.0.0": 3}
    assert summary["candidate"]["version"] == "2.0.0"


def test_records_without_input_are_counted_not_replayed(make_store, evaluator, candidate: Path) -> None:
    store = make_store(store_input="hash")
    record_three(store, evaluator)
    report = replay(Evaluator(load_ruleset(candidate)), store.iter_evaluations(with_input=True))
    assert report.replayed == 0 and report.summary()["notReplayable"] == {"input not kept (hash only or purged)": 3}


def test_replay_from_the_command_line(make_store, evaluator, candidate: Path) -> None:
    store = make_store(store_input="facts")
    ids = record_three(store, evaluator)
    url = store.engine.url.render_as_string(hide_password=False)
    schema = []
    if store.backend == "postgresql":
        with store.engine.connect() as conn:
            schema = ["--schema", conn.exec_driver_sql("SELECT current_schema()").scalar()]
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "replay", "--ruleset", str(candidate), "--database", url, *schema])
    assert result.exit_code == 0, result.output
    assert "3 replayed, 2 would change" in result.output
    assert "triage self-care -> routine: 2" in result.output
    assert f"{ids[0]}" in result.output and f"{ids[2]}" not in result.output
    as_json = runner.invoke(main, ["audit", "replay", "--ruleset", str(candidate), "--database", url, *schema,
                                   "--format", "json", "--all"])
    body = json.loads(as_json.output)
    assert len(body["evaluations"]) == 3 and body["summary"]["changed"] == 2
    later = runner.invoke(main, ["audit", "replay", "--ruleset", str(candidate), "--database", url, *schema,
                                 "--since", "2999-01-01"])
    assert "0 replayed" in later.output
