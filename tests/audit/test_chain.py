"""Tamper evidence: verify names the first altered, deleted or out-of-order record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from cds.audit import AuditStore
from cds.audit.canonical import GENESIS, canonical_json, chain_hash
from cds.audit.chain import ChainRow, ChainWalker
from cds.cli import main
from cds.evaluation.ports import FeedbackRecord
from tests.audit.bundles import cauda_equina, sciatica


@pytest.fixture
def chain(store: AuditStore, record_bundle) -> AuditStore:
    """Four evaluations: seq 1..4."""
    for n in range(3):
        record_bundle(sciatica(f"s{n}", egfr=25 if n == 1 else None))
    record_bundle(cauda_equina("ce"))
    assert store.verify().ok and store.head()[0] == 4
    return store


def sql(store: AuditStore, statement: str, **params: Any) -> Any:
    with store.engine.begin() as conn:
        return conn.execute(text(statement), params)


def sql_without_constraints(store: AuditStore, *statements: str) -> None:
    """As an attacker with the database's owner rights would: foreign keys off."""
    with store.engine.connect() as conn:
        if store.backend == "sqlite":
            raw = conn.connection.dbapi_connection
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute("BEGIN IMMEDIATE")
            for statement in statements:
                raw.execute(statement)
            raw.execute("COMMIT")
            raw.execute("PRAGMA foreign_keys=ON")
            return
        with conn.begin():
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for statement in statements:
                conn.exec_driver_sql(statement)


def record(store: AuditStore, seq: int) -> Any:
    return sql(store, "SELECT * FROM audit_record WHERE seq = :seq", seq=seq).one()


def delete_evaluation(store: AuditStore, seq: int) -> None:
    """What an attacker with table access does to make one evaluation disappear."""
    eid = record(store, seq).record_id
    sql(store, "DELETE FROM audit_card_rule WHERE card IN (SELECT uuid FROM audit_card WHERE evaluation_id = :e)",
        e=eid)
    for table in ("audit_input", "audit_card", "audit_firing", "audit_action"):
        sql(store, f"DELETE FROM {table} WHERE evaluation_id = :e", e=eid)
    sql(store, "DELETE FROM audit_evaluation WHERE id = :e", e=eid)
    sql(store, "DELETE FROM audit_record WHERE seq = :seq", seq=seq)


def cli_verify(store: AuditStore, *args: str) -> Any:
    url = store.engine.url.render_as_string(hide_password=False)
    schema = store.engine.dialect.name == "postgresql" and _schema(store)
    extra = ["--schema", schema] if schema else []
    return CliRunner().invoke(main, ["audit", "verify", "--database", url, *extra, *args])


def _schema(store: AuditStore) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(text("SELECT current_schema()")).scalar())


def test_an_intact_chain_verifies_from_the_command_line(chain: AuditStore) -> None:
    result = cli_verify(chain)
    assert result.exit_code == 0, result.output
    assert "ok: 4 records" in result.output


def test_altered_content_is_named(chain: AuditStore) -> None:
    content = record(chain, 2).content.replace('"triage":"self-care"', '"triage":"none"')
    sql(chain, "UPDATE audit_record SET content = :c WHERE seq = 2", c=content)
    report = chain.verify()
    assert not report.ok and report.problem.seq == 2 and "content altered" in report.problem.reason
    result = cli_verify(chain)
    assert result.exit_code == 1 and "BROKEN at seq 2" in result.output


def test_altered_and_rehashed_content_breaks_the_next_link(chain: AuditStore) -> None:
    row = record(chain, 2)
    content = json.loads(row.content)
    content["recommendations"] = []
    new_text = canonical_json(content)
    sql(chain, "UPDATE audit_record SET content = :c, hash = :h WHERE seq = 2", c=new_text,
        h=chain_hash(row.prev_hash, new_text))
    report = chain.verify()
    assert report.problem.seq in (2, 3)
    # index rows for seq 2 no longer match its (rewritten) content, or seq 3's link is broken
    assert "index altered" in report.problem.reason or "previous-hash" in report.problem.reason


def test_a_deleted_record_is_named(chain: AuditStore) -> None:
    delete_evaluation(chain, 2)
    report = chain.verify()
    assert report.problem.seq == 3 and "seq 2 missing" in report.problem.reason


def test_deleting_the_first_record_is_named(chain: AuditStore) -> None:
    delete_evaluation(chain, 1)
    report = chain.verify()
    assert report.problem.seq == 2 and "1..1 missing" in report.problem.reason


def test_a_truncated_tail_is_named(chain: AuditStore) -> None:
    delete_evaluation(chain, 4)
    report = chain.verify()
    assert report.problem.seq == 4 and "missing at the end" in report.problem.reason


def test_a_record_inserted_out_of_order_is_named(chain: AuditStore) -> None:
    # Forge a record between 2 and 3: renumber 3 and 4 upwards, insert a
    # well-formed link after 2, and move the head. Record 3 (now 4) no longer chains.
    prev = record(chain, 2)
    sql_without_constraints(chain, "UPDATE audit_record SET seq = seq + 10 WHERE seq >= 3",
                            "UPDATE audit_evaluation SET seq = seq + 10 WHERE seq >= 3",
                            "UPDATE audit_record SET seq = seq - 9 WHERE seq >= 13",
                            "UPDATE audit_evaluation SET seq = seq - 9 WHERE seq >= 13",
                            "UPDATE audit_chain_head SET seq = 5")
    forged = {"kind": "retention", "id": "forged", "seq": 3, "recordedAt": "2026-11-22T00:00:00.000000Z",
              "purgedInputsBefore": "2000-01-01T00:00:00.000000Z", "count": 0}
    forged_text = canonical_json(forged)
    sql(chain, "INSERT INTO audit_record (seq, record_id, kind, recorded_at, prev_hash, hash, content) "
               "VALUES (3, 'forged', 'retention', :t, :p, :h, :c)", t=datetime(2026, 11, 22),
        p=prev.hash, h=chain_hash(prev.hash, forged_text), c=forged_text)
    report = chain.verify()
    assert not report.ok and report.problem.seq == 4
    assert "previous-hash" in report.problem.reason or "column altered" in report.problem.reason


def test_an_altered_index_row_is_named(chain: AuditStore) -> None:
    # Hiding an emergency from `GET /audit/evaluations?triage=emergency`.
    sql(chain, "UPDATE audit_evaluation SET triage = 'none' WHERE seq = 4")
    report = chain.verify()
    assert report.problem.seq == 4 and "audit_evaluation" in report.problem.reason


def test_an_altered_action_row_is_named(chain: AuditStore) -> None:
    sql(chain, "DELETE FROM audit_action WHERE action = 'emergency-spine-surgery'")
    report = chain.verify()
    assert report.problem.seq == 4 and "audit_action" in report.problem.reason


def test_a_forged_index_row_is_named(chain: AuditStore, record_bundle) -> None:
    # An evaluation row that no chained record stands behind, hung on a feedback record's seq.
    result = record_bundle(sciatica("s9"))
    chain.record_feedback(FeedbackRecord(card=result.cards[0]["uuid"], outcome="accepted",
                                         outcome_at=datetime.now(UTC)))
    sql(chain, "INSERT INTO audit_evaluation (id, seq, received_at, channel, triage, outcome) "
               "VALUES ('forged', 6, :t, 'rest', 'emergency', 'success')", t=datetime(2026, 11, 22))
    report = chain.verify()
    assert not report.ok and "match no chained record" in report.problem.reason


def test_altered_stored_input_is_named(chain: AuditStore) -> None:
    eid = record(chain, 3).record_id
    sql(chain, "UPDATE audit_input SET facts = '[]' WHERE evaluation_id = :e", e=eid)
    report = chain.verify()
    assert report.problem.seq == 3 and "input" in report.problem.reason


def test_retention_keeps_the_chain_valid(chain: AuditStore, record_bundle) -> None:
    purged = chain.purge_inputs(datetime.now(UTC) + timedelta(seconds=1))
    assert purged == 4
    assert chain.verify().ok
    assert chain.get_evaluation(record(chain, 1).record_id)["input"]["facts"] is None
    record_bundle(sciatica("later"))
    pruned = chain.prune(datetime.now(UTC) + timedelta(seconds=1))
    assert pruned == 6
    report = chain.verify()
    assert report.ok and report.first_seq == 7 and report.notes
    record_bundle(sciatica("after-prune"))
    assert chain.verify().ok and chain.head()[0] == 8


def test_input_removed_without_retention_is_named(chain: AuditStore) -> None:
    sql(chain, "UPDATE audit_input SET facts = NULL, raw = NULL, purged_at = :t", t=datetime(2026, 1, 1))
    assert chain.verify().problem.seq == 1


def test_published_head_catches_a_rewritten_history(chain: AuditStore) -> None:
    seq, digest = chain.head()
    assert cli_verify(chain, "--expect-head", f"{seq}:{digest}").exit_code == 0
    assert cli_verify(chain, "--expect-head", f"{seq}:{'0' * 64}").exit_code == 1


def test_the_walker_alone() -> None:
    rows, prev = [], GENESIS
    for seq in (1, 2, 3):
        content = canonical_json({"kind": "x", "id": f"r{seq}", "seq": seq})
        digest = chain_hash(prev, content)
        rows.append(ChainRow(seq, f"r{seq}", "x", prev, digest, content))
        prev = digest
    walker = ChainWalker()
    assert all(walker.feed(r) for r in rows)
    assert walker.finish(3, prev).ok
    swapped = ChainWalker()
    swapped.feed(rows[0])
    assert not swapped.feed(rows[2])
    assert swapped.report.problem.seq == 3 and "seq 2 missing" in swapped.report.problem.reason
