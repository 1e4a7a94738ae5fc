"""The store as an AuditSink, and its read side, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds.audit import AuditStore
from cds.audit.recording import Caller
from cds.errors import InputError, NotFound
from cds.evaluation.ports import FeedbackRecord
from tests.audit.bundles import cauda_equina, sciatica

NOW = datetime.now(UTC)


def test_an_evaluation_is_recorded_whole(store: AuditStore, record_bundle) -> None:
    caller = Caller(channel="cds-hooks", client="https://ehr.example/iss", jti="jti-1", user="Practitioner/7",
                    hook="patient-view", hook_instance="d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
    result = record_bundle(sciatica("p1", egfr=25), caller)
    trace = store.get_evaluation(result.record_id)
    assert trace["client"] == "https://ehr.example/iss" and trace["jti"] == "jti-1"
    assert trace["user"] == "Practitioner/7" and trace["hook"] == "patient-view"
    assert trace["hookInstance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert trace["patient"] == "Patient/p1" and trace["asOf"] == "2026-11-22"
    assert trace["ruleset"] == result.evaluation["ruleset"]
    assert trace["firings"] == result.evaluation["firings"] and len(trace["firings"]) >= 3
    assert [f["rule"] for f in trace["firings"]][0] == "radicular/sciatica"
    assert {a["action"] for a in trace["alerts"]} == {"avoid-nsaid"}
    assert trace["recommendations"] == result.evaluation["recommendations"]
    assert [c["uuid"] for c in trace["cards"]] == [c["uuid"] for c in result.cards]
    assert trace["outcome"] == "success" and trace["durationMs"] > 0
    assert len(trace["input"]["sha256"]) == 64
    assert {f["id"] for f in trace["input"]["facts"]} >= {"Patient/p1", "Observation/p1-egfr"}
    assert "raw" not in trace["input"]
    assert store.get_evaluation(result.record_id, include_raw=True)["input"]["raw"].startswith("{")
    assert trace["chain"]["seq"] == 1


def test_a_failed_evaluation_is_recorded_with_its_error(store: AuditStore, record_bundle) -> None:
    with pytest.raises(InputError):
        record_bundle({"resourceType": "Bundle", "entry": "not a list"})
    [item] = store.list_evaluations().items
    assert item["outcome"] == "error"
    trace = store.get_evaluation(item["id"])
    assert "entry" in trace["error"] and trace["recommendations"] == []


def test_feedback_is_recorded_against_its_card(store: AuditStore, record_bundle) -> None:
    result = record_bundle(sciatica("p1", egfr=25))
    card = result.cards[0]["uuid"]
    assert store.card_exists(card) and not store.card_exists("no-such-card")
    store.record_feedback(FeedbackRecord(card=card, outcome="overridden", outcome_at=NOW,
                                         override_reason={"code": "patient-preference"}, user="Practitioner/7"))
    with pytest.raises(NotFound):
        store.record_feedback(FeedbackRecord(card="no-such-card", outcome="accepted", outcome_at=NOW))
    [feedback] = store.get_evaluation(result.record_id)["feedback"]
    assert feedback["outcome"] == "overridden" and feedback["overrideReason"] == {"code": "patient-preference"}
    assert store.head()[0] == 2
    assert store.verify().ok


def test_filters_and_paging(store: AuditStore, record_bundle) -> None:
    for n in range(5):
        record_bundle(sciatica(f"s{n}"), Caller(client="ehr-a" if n % 2 else "ehr-b"))
    record_bundle(cauda_equina("ce"), Caller(client="ehr-a"))
    assert len(store.list_evaluations(limit=100).items) == 6
    assert [i["patient"] for i in store.list_evaluations(triage="emergency").items] == ["Patient/ce"]
    assert [i["patient"] for i in store.list_evaluations(patient="Patient/s3").items] == ["Patient/s3"]
    assert len(store.list_evaluations(client="ehr-a").items) == 3
    assert len(store.list_evaluations(rule="red-flags/cauda-equina-emergency").items) == 1
    assert len(store.list_evaluations(rule="radicular/acute-conservative").items) == 5
    assert len(store.list_evaluations(action="emergency-spine-surgery").items) == 1
    assert len(store.list_evaluations(action="nsaid").items) == 5
    assert store.list_evaluations(since=NOW + timedelta(days=1)).items == []
    assert len(store.list_evaluations(until=NOW + timedelta(days=1)).items) == 6
    pages, after = [], None
    while True:
        page = store.list_evaluations(limit=4, after=after)
        pages.append([i["seq"] for i in page.items])
        if page.next_after is None:
            break
        after = page.next_after
    assert pages == [[1, 2, 3, 4], [5, 6]]


def test_rule_stats_count_firings_and_feedback(store: AuditStore, record_bundle) -> None:
    results = [record_bundle(sciatica(f"s{n}")) for n in range(4)]
    rule = "radicular/acute-conservative"
    cards = [c["uuid"] for r in results for c in r.cards if rule in c["rules"]]
    assert len(cards) == 12  # three suggestions per evaluation, one card each
    for card in cards[:6]:
        store.record_feedback(FeedbackRecord(card=card, outcome="accepted", outcome_at=NOW))
    for card in cards[6:9]:
        store.record_feedback(FeedbackRecord(card=card, outcome="overridden", outcome_at=NOW))
    stats = store.rule_stats(rule)
    assert stats["firings"] == 4 and stats["evaluations"] == 4 and stats["cards"] == 12
    assert (stats["accepted"], stats["overridden"]) == (6, 3)
    assert stats["acceptanceRate"] == 0.5 and stats["overrideRate"] == 0.25
    assert store.rule_stats(rule, since=NOW + timedelta(days=1))["firings"] == 0
    assert store.rule_stats("no/such-rule")["acceptanceRate"] is None


@pytest.mark.parametrize("mode", ["full", "facts", "hash"])
def test_what_input_is_kept_is_configurable(make_store, evaluator, mode: str) -> None:
    import json

    from cds.audit.recording import evaluate_and_record
    from tests.audit.conftest import AS_OF

    store = make_store(store_input=mode)
    result = evaluate_and_record(evaluator, store, json.dumps(sciatica()).encode(), AS_OF)
    trace = store.get_evaluation(result.record_id, include_raw=True)
    assert trace["input"]["stored"] == mode
    assert (trace["input"].get("facts") is not None) == (mode != "hash")
    assert ("raw" in trace["input"]) == (mode == "full")
    assert trace["input"]["factsSha256"] and trace["input"]["factCount"] == 2
    assert store.verify().ok


def test_unknown_evaluation_is_not_found(store: AuditStore) -> None:
    with pytest.raises(NotFound):
        store.get_evaluation("00000000-0000-0000-0000-000000000000")


def test_the_command_line_records_when_given_a_database(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from cds.cli import main
    from tests.audit.conftest import RULESET

    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(json.dumps(sciatica("cli-1")))
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    result = CliRunner().invoke(main, ["audit", "evaluate", str(bundle_file), "--as-of", "2026-11-22",
                                       "--ruleset", str(RULESET), "--database", url, "--user", "Practitioner/3"])
    assert result.exit_code == 0, result.output
    store = AuditStore.open(url)
    try:
        [item] = store.list_evaluations().items
        assert item["channel"] == "cli" and item["patient"] == "Patient/cli-1" and item["user"] == "Practitioner/3"
        assert store.verify().ok
    finally:
        store.close()
