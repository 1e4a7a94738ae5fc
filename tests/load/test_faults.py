"""Faults under load, on a real gunicorn with the shipped config:
PostgreSQL stopped and started, a worker killed with SIGKILL.

(The audit's own SIGKILL test, tests/audit/test_durability.py, proves no
answered evaluation is lost on either store; the one here adds what a
client and an operator see: the worker is replaced, and only the calls in
flight on it fail.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from cds.audit import AuditStore
from tests.load.harness import Load, gunicorn, sciatica

POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
pytestmark = pytest.mark.slow


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail("this test stops and starts the local PostgreSQL cluster: pg_ctlcluster and "
                    "/etc/postgresql are needed (Debian's postgresql package, as .ci/run expects)")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _postgres(action: str) -> None:
    subprocess.run([*_cluster(), action, *(["-m", "fast"] if action == "stop" else [])], check=True,
                   capture_output=True, timeout=60)


def _postgres_up(timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(POSTGRES_URL, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            time.sleep(0.3)
    return False


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"cds_load_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        if _postgres_up():
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _audited(url: str, schema: str | None) -> tuple[set[str], bool, str | None]:
    store = AuditStore.open(url, schema=schema)
    try:
        with store.engine.connect() as conn:
            patients = {row[0] for row in conn.execute(text("SELECT patient FROM audit_evaluation"))}
        report = store.verify()
        return patients, bool(report.ok), report.problem
    finally:
        store.close()


def test_postgres_stopped_under_load_fails_closed_then_recovers_by_itself(pg_schema: str, tmp_path: Path) -> None:
    _cluster()
    AuditStore.open(POSTGRES_URL, schema=pg_schema).close()  # migrated before the workers start
    env = {"CDS_DATABASE_URL": POSTGRES_URL, "CDS_AUDIT_SCHEMA": pg_schema}
    stopped_at = started_at = recovered_at = None
    with gunicorn(env, tmp_path) as server:
        load = Load(server.base, sciatica, threads=4, max_calls=20_000, pause=0.01)
        try:
            with load.running():
                time.sleep(2.0)
                assert load.statuses().get(200, 0) > 0, load.statuses()
                _postgres("stop")
                stopped_at = time.monotonic()
                time.sleep(4.0)
                started_at = time.monotonic()
                _postgres("start")
                assert _postgres_up(), "PostgreSQL did not come back"
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:
                    recent = [o for o in load.outcomes[-20:] if o.at > started_at]
                    if len(recent) >= 20 and all(o.status == 200 for o in recent):
                        recovered_at = time.monotonic()
                        break
                    time.sleep(0.5)
                time.sleep(2.0)
        finally:
            if not _postgres_up(timeout=3):
                _postgres("start")  # never leave it stopped
                _postgres_up()
        log = server.log.read_text()

    assert recovered_at is not None, f"the service did not recover by itself: {load.statuses()} {log[-2000:]}"
    down = [o for o in load.outcomes if stopped_at + 0.5 < o.at < started_at]
    assert down, "no call was made while PostgreSQL was down"
    for outcome in down:
        assert outcome.status == 503, (outcome.status, outcome.error, outcome.body)
        assert outcome.body["resourceType"] == "OperationOutcome"
        assert outcome.body["issue"][0]["severity"] in ("error", "fatal")
    unexpected = {o.status for o in load.outcomes} - {200, 503}
    assert not unexpected, f"only answers or 503 are allowed: {load.statuses()}"
    after = [o for o in load.outcomes if o.at > recovered_at]
    assert after and all(o.status == 200 for o in after), load.statuses()
    patients, chain_ok, problem = _audited(POSTGRES_URL, pg_schema)
    missing = set(load.answered()) - patients
    assert not missing, f"{len(missing)} answered evaluations are not in the trail: {sorted(missing)[:5]}"
    assert chain_ok, problem


def test_a_worker_killed_under_load_is_replaced_and_only_its_calls_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditStore.open(url).close()
    threads = 4
    with gunicorn({"CDS_DATABASE_URL": url}, tmp_path, workers=2, threads=threads) as server:
        load = Load(server.base, sciatica, threads=6, max_calls=20_000)
        with load.running():
            time.sleep(1.5)
            before = server.workers()
            assert len(before) == 2, before
            victim = before[0]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = server.workers()
                if len(now) == 2 and victim not in now:
                    break
                time.sleep(0.1)
            replaced = server.workers()
            time.sleep(2.0)
        answered_after = [o for o in load.outcomes if o.status == 200 and o.at > killed_at + 1]
    assert victim not in replaced and len(replaced) == 2, f"not replaced: {before} -> {replaced}"
    failed = [o for o in load.outcomes if o.status != 200]
    # A gthread worker holds at most `threads` calls (urllib opens a connection per call).
    assert len(failed) <= threads, [(o.status, o.error) for o in failed]
    assert all(o.at <= killed_at for o in failed), "only calls already in flight at the kill may fail"
    assert answered_after, "the service went on answering"
    patients, chain_ok, problem = _audited(url, None)
    assert not set(load.answered()) - patients
    assert chain_ok, problem
