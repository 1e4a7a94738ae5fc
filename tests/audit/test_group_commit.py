"""Group commit: threads of one process appending at once share a transaction, and a failed
commit releases none of them.

To make a group deterministic, the first transaction's commit is held (a
SQLAlchemy ``commit`` event, which runs just before the database commits)
until the other callers have queued behind it; they then form the next
group(s). Commits are counted with the same event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from cds.audit import AuditStore
from cds.audit.group import GroupCommit
from cds.audit.store import GROUP_LIMIT
from cds.errors import NotFound, StoreUnavailable
from cds.evaluation.ports import FeedbackRecord
from tests.audit.writer import synthetic_record

WAIT_S = 60.0


class HeldFirstCommit:
    """Counts commits on the store's engine; holds the first until ``queued`` callers wait behind it."""

    def __init__(self, store: AuditStore, queued: int, *, fail_after_first: bool = False) -> None:
        self.store = store
        self.queued = queued
        self.fail_after_first = fail_after_first
        self.commits = 0
        self.first_started = threading.Event()
        self.timed_out = False
        event.listen(store.engine, "commit", self.on_commit)

    def on_commit(self, _conn: Any) -> None:
        self.commits += 1
        if self.commits == 1:
            self.first_started.set()
            deadline = time.monotonic() + WAIT_S
            while self.store._group.queued < self.queued:
                if time.monotonic() > deadline:
                    self.timed_out = True
                    break
                time.sleep(0.002)
        elif self.fail_after_first:
            raise OperationalError("COMMIT", {}, OSError(5, "Input/output error (injected at commit)"))

    def remove(self) -> None:
        event.remove(self.store.engine, "commit", self.on_commit)


def run_all(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call in its own thread at once; each result, or the exception it raised."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a caller never returned"
    return results


def count(store: AuditStore, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_threads_writing_at_once_share_transactions_and_keep_one_gapless_chain(make_store) -> None:
    store = make_store(store_input="facts")
    evaluations, feedback = GROUP_LIMIT, 5
    queued = evaluations + feedback + 1  # + feedback on a card nobody was answered
    held = HeldFirstCommit(store, queued)
    record0 = synthetic_record(0)
    card = record0.cards[0]["uuid"]
    leader_id: list[str] = []
    leader = threading.Thread(target=lambda: leader_id.append(store.record_evaluation(record0)))
    leader.start()
    assert held.first_started.wait(WAIT_S)

    now = datetime.now(UTC)
    calls: list[Callable[[], Any]] = [lambda i=i: store.record_evaluation(synthetic_record(i))
                                      for i in range(1, evaluations + 1)]
    calls += [lambda: store.record_feedback(FeedbackRecord(card=card, outcome="accepted", outcome_at=now))
              for _ in range(feedback)]
    calls.append(lambda: store.record_feedback(FeedbackRecord(card="never-answered", outcome="accepted",
                                                              outcome_at=now)))
    results = run_all(calls)
    leader.join(WAIT_S)
    held.remove()

    assert not held.timed_out
    assert len(leader_id) == 1
    # The unknown card fails alone; everyone else in its group was written.
    assert isinstance(results[-1], NotFound)
    ids = results[:-1]
    assert all(isinstance(r, str) for r in ids), [r for r in ids if not isinstance(r, str)]
    records = 1 + evaluations + feedback
    # 1 alone, then the 70 queued callers: 64 (the bound) and the rest.
    assert held.commits == 3 < records
    report = store.verify()
    assert report.ok, report.problem
    assert report.checked == report.head_seq == records
    with store.engine.connect() as conn:
        seqs = list(conn.execute(text("SELECT seq FROM audit_record ORDER BY seq")).scalars())
        chained = set(conn.execute(text("SELECT record_id FROM audit_record")).scalars())
    assert seqs == list(range(1, records + 1))
    assert chained == set(ids) | set(leader_id)
    assert count(store, "audit_evaluation") == 1 + evaluations
    assert count(store, "audit_feedback") == feedback


def test_a_failed_group_commit_fails_every_caller_and_writes_nothing(make_store) -> None:
    store = make_store(store_input="full")
    queued = 12
    held = HeldFirstCommit(store, queued, fail_after_first=True)
    leader_id: list[str] = []
    leader = threading.Thread(target=lambda: leader_id.append(store.record_evaluation(synthetic_record(0))))
    leader.start()
    assert held.first_started.wait(WAIT_S)
    with structlog.testing.capture_logs() as logs:
        results = run_all([lambda i=i: store.record_evaluation(synthetic_record(i), {"raw": i})
                           for i in range(1, queued + 1)])
    leader.join(WAIT_S)
    held.remove()

    assert not held.timed_out
    assert len(leader_id) == 1
    assert held.commits == 2  # the group of 12 tried once
    assert all(isinstance(r, StoreUnavailable) and r.status == 503 for r in results), results
    refused = [e for e in logs if e["event"] == "audit_write_failed"]
    assert len(refused) == queued and all(e["log_level"] == "error" for e in refused)
    assert [e["records"] for e in logs if e["event"] == "audit_group_failed"] == [queued]
    # Nothing of the group is anywhere: not the records, not their index rows, not their input.
    assert store.head()[0] == 1
    for table in ("audit_record", "audit_evaluation", "audit_input", "audit_card", "audit_firing"):
        assert count(store, table) == 1, table
    assert store.verify().ok
    # The store recovers: the next caller is written after the first record.
    store.record_evaluation(synthetic_record(99))
    assert store.head()[0] == 2 and store.verify().ok


def test_an_idle_caller_is_written_at_once_in_a_group_of_one() -> None:
    groups: list[list[int]] = []
    group = GroupCommit(lambda jobs: groups.append(list(jobs)) or [job * 10 for job in jobs])
    assert [group.submit(n) for n in (1, 2, 3)] == [10, 20, 30]
    assert groups == [[1], [2], [3]]


def test_a_write_that_raises_fails_the_whole_group() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def write(jobs: list[int]) -> list[int | BaseException]:
        calls.append(list(jobs))
        if len(calls) == 1:
            release.wait(WAIT_S)  # the first group is in flight while the others queue
            return [0 for _ in jobs]
        raise OSError("disk full")

    group: GroupCommit[int] = GroupCommit(write, limit=4)
    first = threading.Thread(target=group.submit, args=(0,))
    first.start()
    deadline = time.monotonic() + WAIT_S
    while not calls and time.monotonic() < deadline:
        time.sleep(0.002)
    waiters = [threading.Thread(target=lambda n=n: outcomes.__setitem__(n, group.submit(n))) for n in range(1, 7)]
    outcomes: dict[int, Any] = {}
    for w in waiters:
        w.start()
    while group.queued < 6 and time.monotonic() < deadline:
        time.sleep(0.002)
    release.set()
    first.join(WAIT_S)
    for w in waiters:
        w.join(WAIT_S)
    assert sorted(len(c) for c in calls) == [1, 2, 4]  # bounded at 4 per group
    assert all(isinstance(o, OSError) for o in outcomes.values()) and len(outcomes) == 6


def test_a_group_holds_at_least_one_job() -> None:
    with pytest.raises(ValueError):
        GroupCommit(lambda jobs: [], limit=0)


def test_postgresql_refusing_the_commit_itself_fails_the_whole_group(postgres_available, tmp_path) -> None:
    """A real failure at COMMIT: a deferred constraint trigger refuses one record of the group."""
    from tests.audit.conftest import StoreFactory

    factory = StoreFactory("postgresql", tmp_path)
    try:
        store = factory(store_input="facts")
        with store.engine.begin() as conn:
            conn.execute(text("CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              "IF NEW.content LIKE '%Patient/refuse-me%' THEN RAISE EXCEPTION 'refused at commit'; "
                              "END IF; RETURN NULL; END $$"))
            conn.execute(text("CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON audit_record "
                              "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_marked()"))
        queued = 8
        held = HeldFirstCommit(store, queued)
        leader = threading.Thread(target=lambda: store.record_evaluation(synthetic_record(0)))
        leader.start()
        assert held.first_started.wait(WAIT_S)
        records = [synthetic_record(i) for i in range(1, queued + 1)]
        records[3] = replace(records[3], patient="Patient/refuse-me")
        results = run_all([lambda r=r: store.record_evaluation(r) for r in records])
        leader.join(WAIT_S)
        held.remove()
        assert not held.timed_out and held.commits == 2
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert "refused at commit" in str(results[0].__cause__)
        assert store.head()[0] == 1
        assert count(store, "audit_record") == count(store, "audit_evaluation") == 1
        assert store.verify().ok
    finally:
        factory.close()
