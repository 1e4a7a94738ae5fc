"""Durability: no answer without a committed record, and SIGKILL loses no answered evaluation."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text

from cds.api import create_app
from cds.audit import AuditStore
from cds.audit.recording import evaluate_and_record
from cds.errors import StoreUnavailable
from tests.audit.bundles import sciatica
from tests.audit.conftest import AS_OF, RULESET
from tests.audit.writer import synthetic_record
from tests.servers import children, free_port, wait_ready
from tests.servers import stop as stop_server

ROOT = Path(__file__).resolve().parents[2]


def break_store(store: AuditStore) -> None:
    """The store can no longer write: its chain table is gone."""
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_chain_head"))


def test_a_record_that_cannot_be_written_fails_closed_and_says_so(store: AuditStore, evaluator) -> None:
    break_store(store)
    with structlog.testing.capture_logs() as logs, pytest.raises(StoreUnavailable) as raised:
        evaluate_and_record(evaluator, store, json.dumps(sciatica()).encode(), AS_OF)
    assert raised.value.status == 503
    assert any(e["event"] == "audit_write_failed" and e["log_level"] == "error" for e in logs)


def test_an_unreachable_database_fails_closed(tmp_path: Path) -> None:
    from cds.audit.database import make_engine

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = AuditStore(make_engine(f"postgresql://postgres@127.0.0.1:{port}/test", connect_args={"connect_timeout": 2}))
    try:
        with pytest.raises(StoreUnavailable):
            store.record_evaluation(synthetic_record(1))
        assert store.ping() is False
        with pytest.raises(StoreUnavailable):
            AuditStore.open(f"postgresql://postgres@127.0.0.1:{port}/test", connect_args={"connect_timeout": 2})
    finally:
        store.close()


def test_the_service_answers_503_with_an_operation_outcome(store: AuditStore, evaluator) -> None:
    app = create_app({"CDS_AUTH": "off", "CDS_BIND": "127.0.0.1:8080", "AUDIT": store, "EVALUATOR": evaluator})
    client = app.test_client()
    assert client.post("/evaluate?asOf=2026-11-22", json=sciatica()).status_code == 200
    break_store(store)
    response = client.post("/evaluate?asOf=2026-11-22", json=sciatica())
    assert response.status_code == 503
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "transient"
    assert "patient" not in body and "recommendations" not in body




@pytest.mark.slow
def test_a_worker_killed_mid_load_loses_no_answered_evaluation(make_store, tmp_path: Path) -> None:
    """Real gunicorn workers under load; SIGKILL one; every 200 is in the trail and the chain verifies."""
    url, schema = make_store.location()
    store = make_store.open(url, schema)  # migrated before the workers start
    port = free_port()
    env = {**os.environ, "CDS_AUTH": "off", "CDS_BIND": f"127.0.0.1:{port}", "CDS_DATABASE_URL": url,
           "CDS_AUDIT_SCHEMA": schema or "", "CDS_WORKERS": "2", "CDS_THREADS": "4", "CDS_RULESET": str(RULESET),
           "CDS_LOG_LEVEL": "warning", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                               "--no-control-socket"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(1_000_000))

    def client() -> None:
        while not stop.is_set():
            with lock:
                n = next(counter)
            if n >= 1500:  # bounded in count as well as in time
                return
            pid = f"load-{n}"
            body = json.dumps(sciatica(pid, egfr=20 if n % 2 else None)).encode()
            request = urllib.request.Request(f"{base}/evaluate?asOf=2026-11-22", data=body, method="POST",
                                             headers={"Content-Type": "application/fhir+json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    payload = json.loads(response.read())
                    if response.status == 200:
                        assert payload["patient"] == f"Patient/{pid}"
                        with lock:
                            answered.append(payload["patient"])
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
                with lock:
                    failures.append(type(exc).__name__)

    try:
        wait_ready(server, f"{base}/readyz", tmp_path / "server.log")
        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        workers = sorted(children(server.pid))
        assert workers, "no gunicorn workers found"
        before_kill = len(answered)
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(2.5)  # the master respawns the worker; load goes on
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop_server(server)
        log.close()

    assert before_kill > 0 and len(answered) > before_kill, (before_kill, len(answered), failures[:5])
    with store.engine.connect() as conn:
        recorded = {row[0] for row in conn.execute(text("SELECT patient FROM audit_evaluation"))}
    missing = sorted(set(answered) - recorded)
    assert not missing, f"{len(missing)} answered evaluations are not in the trail: {missing[:5]}"
    report = store.verify()
    assert report.ok, report.problem
    assert report.head_seq >= len(answered)
