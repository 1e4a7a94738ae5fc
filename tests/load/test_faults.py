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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from cds.audit import AuditStore
from tests.load.harness import Load, free_port, gunicorn, sciatica

pytestmark = pytest.mark.slow


class PrivatePostgres:
    """A PostgreSQL server of our own (initdb in a temporary directory, a free
    port), so stopping it disturbs nothing else on the machine: the shared
    server at 127.0.0.1:5432 serves every other test, and other people's."""

    def __init__(self, root: Path) -> None:
        versions = sorted(os.listdir("/usr/lib/postgresql")) if os.path.isdir("/usr/lib/postgresql") else []
        if not versions:
            pytest.fail("this test runs a PostgreSQL server of its own: Debian's postgresql package is needed "
                        "(as .ci/run expects)")
        self.bin = Path("/usr/lib/postgresql") / versions[-1] / "bin"
        # PostgreSQL refuses to run as root: as root, run it as the postgres user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.data.mkdir()
        if self.as_user:
            # its data, log and socket directory belong to the user it runs as
            os.chmod(root, 0o755)
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="cds-pg-"))
    server = PrivatePostgres(root)
    server.start()
    try:
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _audited(url: str, schema: str | None) -> tuple[set[str], bool, str | None]:
    store = AuditStore.open(url, schema=schema)
    try:
        with store.engine.connect() as conn:
            patients = {row[0] for row in conn.execute(text("SELECT patient FROM audit_evaluation"))}
        report = store.verify()
        return patients, bool(report.ok), report.problem
    finally:
        store.close()


def test_postgres_stopped_under_load_fails_closed_then_recovers_by_itself(private_postgres: PrivatePostgres,
                                                                         tmp_path: Path) -> None:
    postgres = private_postgres
    AuditStore.open(postgres.url).close()  # migrated before the workers start
    stopped_at = started_at = recovered_at = None
    with gunicorn({"CDS_DATABASE_URL": postgres.url}, tmp_path) as server:
        load = Load(server.base, sciatica, threads=4, max_calls=20_000, pause=0.01)
        with load.running():
            time.sleep(2.0)
            assert load.statuses().get(200, 0) > 0, load.statuses()
            postgres.stop()
            stopped_at = time.monotonic()
            time.sleep(4.0)
            started_at = time.monotonic()
            postgres.start()
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                recent = [o for o in load.outcomes[-20:] if o.at > started_at]
                if len(recent) >= 20 and all(o.status == 200 for o in recent):
                    recovered_at = time.monotonic()
                    break
                time.sleep(0.5)
            time.sleep(2.0)
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
    patients, chain_ok, problem = _audited(postgres.url, None)
    missing = set(load.answered()) - patients
    assert not missing, f"{len(missing)} answered evaluations are not in the trail: {sorted(missing)[:5]}"
    assert chain_ok, problem


def test_a_worker_killed_under_load_is_replaced_and_only_its_calls_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditStore.open(url).close()
    threads = 4
    with gunicorn({"CDS_DATABASE_URL": url}, tmp_path, workers=2, threads=threads) as server:
        clients = 6
        load = Load(server.base, sciatica, threads=clients, max_calls=20_000)
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
    # Each client has one call in flight at a time, and the killed worker may
    # hold every client's: being served by its threads, or accepted and queued
    # for one (gthread accepts ahead). So at most one failed call per client,
    # and only calls already in flight at the kill.
    assert len(failed) <= clients, [(o.status, o.error) for o in failed]
    assert all(o.at <= killed_at for o in failed), "only calls already in flight at the kill may fail"
    assert answered_after, "the service went on answering"
    patients, chain_ok, problem = _audited(url, None)
    assert not set(load.answered()) - patients
    assert chain_ok, problem
