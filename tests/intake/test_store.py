"""The intake schema is its models, migrates down and up beside the audit's, and concurrent
posts for one patient lose nothing and duplicate nothing."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from cds.audit.migrate import current_revision as audit_revision
from cds.intake.migrate import current_revision, downgrade, head_revision, upgrade
from cds.intake.models import Base, Evaluation
from tests.intake.conftest import RETENTION, SCIATICA, evaluations, observation, patient


def _intake_only(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return type_ != "table" or name.startswith("intake_") and name != "intake_alembic_version"


def test_the_migrated_intake_schema_is_the_models(intake, store) -> None:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _intake_only})
        assert compare_metadata(context, Base.metadata) == []
    assert current_revision(store.engine) == head_revision()
    assert audit_revision(store.engine) == "0001"  # the audit's own history is untouched


def test_down_and_up_again(intake, store) -> None:
    downgrade(store.engine, "base")
    assert current_revision(store.engine) is None
    assert store.verify().ok
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()
    assert intake.put(patient()).status_code == 201


def test_concurrent_posts_for_one_patient_keep_every_version(intake, store) -> None:
    intake.put(patient())
    errors: list[str] = []

    def post(n: int) -> None:
        for k in range(5):
            answer = intake.put(observation(f"o-{n}-{k}", SCIATICA if k % 2 else RETENTION))
            if answer.status_code != 201:
                errors.append(f"{n}/{k}: {answer.status_code} {answer.json}")

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(evaluations(store)) == 1 + 30
    listed = intake.worklist("?all=1&limit=1000")["patients"][0]
    versions = sorted(c["recordVersion"] for c in listed["changes"])
    assert versions == sorted(set(versions))  # each record version evaluated once
    assert store.verify().ok


def test_two_servers_posting_for_one_patient_race_safely(make_intake, store) -> None:
    """Two apps on one database hold separate locks, like two worker processes: the record's
    compare-and-swap decides, the loser starts again, and no version is lost or written twice."""
    first, second = make_intake(), make_intake()
    first.put(patient())
    answers: list[tuple[str, int]] = []
    lock = threading.Lock()

    def post(app, n: int) -> None:  # type: ignore[no-untyped-def]
        for k in range(6):
            rid = f"o-{n}-{k}"
            status = app.put(observation(rid, SCIATICA if k % 2 else RETENTION)).status_code
            with lock:
                answers.append((rid, status))

    threads = [threading.Thread(target=post, args=(app, n)) for n, app in enumerate([first, second] * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {status for _rid, status in answers} <= {201, 409}
    stored = [rid for rid, status in answers if status == 201]
    assert len(stored) >= 18  # most win at once or on a retry; a 409 says "retry" and stored nothing
    for rid, status in answers:
        assert first.send("GET", f"/fhir/Observation/{rid}").status_code == (200 if status == 201 else 404)
    with store.engine.connect() as conn:
        versions = sorted(conn.execute(select(Evaluation.record_version)).scalars())
    assert versions == list(range(1, 2 + len(stored)))  # one applied evaluation per version, no gap
    # Lost races leave audit records of evaluations never applied; never fewer records than posts applied.
    assert len(evaluations(store)) >= 1 + len(stored)
    assert store.verify().ok
