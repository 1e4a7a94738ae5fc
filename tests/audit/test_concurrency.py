"""The chain stays valid with many threads and several processes appending at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text

from cds.audit import AuditStore
from tests.audit.writer import synthetic_record

ROOT = Path(__file__).resolve().parents[2]
PROCESSES, THREADS, PER_THREAD = 3, 4, 12


def test_threads_and_processes_append_one_valid_chain(make_store) -> None:
    url, schema = make_store.location()
    store = make_store.open(url, schema)
    writers = [subprocess.Popen([sys.executable, "-m", "tests.audit.writer", url, schema or "", str(THREADS),
                                 str(PER_THREAD), "--feedback"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(PROCESSES)]
    local_ids: list[str] = []

    def append(t: int) -> None:
        for i in range(PER_THREAD):
            local_ids.append(store.record_evaluation(synthetic_record(1000 + t * PER_THREAD + i)))

    threads = [threading.Thread(target=append, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0] * PROCESSES, [err for _, err in results]
    remote_ids = [rid for out, _ in results for rid in out.split()]

    evaluations = (PROCESSES + 1) * THREADS * PER_THREAD
    feedback = PROCESSES * THREADS * len(range(0, PER_THREAD, 3))
    assert len(remote_ids) + len(local_ids) == evaluations
    report = store.verify()
    assert report.ok, report.problem
    assert report.checked == report.head_seq == evaluations + feedback
    with store.engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_record ORDER BY seq"))]
        recorded = {r[0] for r in conn.execute(text("SELECT id FROM audit_evaluation"))}
    assert seqs == list(range(1, evaluations + feedback + 1))
    assert recorded == set(remote_ids) | set(local_ids)


def test_concurrent_stores_in_one_process_share_the_chain(make_store) -> None:
    url, schema = make_store.location()
    stores: list[AuditStore] = [make_store.open(url, schema) for _ in range(3)]
    threads = [threading.Thread(target=lambda s=s: [s.record_evaluation(synthetic_record(i)) for i in range(10)])
               for s in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = stores[0].verify()
    assert report.ok and report.head_seq == 60
