"""A writer process for the concurrency tests and for measuring append rates.

    python -m tests.audit.writer URL SCHEMA THREADS PER_THREAD [--feedback]

Appends THREADS x PER_THREAD synthetic evaluations (each with one card) from
THREADS threads at once, prints every committed record id, one per line, and
the rate on stderr.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from cds.audit import AuditStore
from cds.evaluation.ports import EvaluationRecord, FeedbackRecord


def synthetic_record(n: int) -> EvaluationRecord:
    rule = f"test/rule-{n % 5}"
    return EvaluationRecord(
        received_at=datetime.now(UTC), channel="batch", client=f"writer-{os.getpid()}", jti=None,
        user=None, hook=None, hook_instance=str(uuid.uuid4()), patient=f"Patient/w{os.getpid()}-{n}",
        input_sha256="0" * 64,
        facts=[{"id": f"Observation/{n}", "type": "finding", "fields": {"concept": "numbness", "status": "present"},
                "resource": f"Observation/{n}", "label": "numbness", "rule": None, "because": [], "meta": {}}],
        ruleset={"name": "synthetic", "version": "0.0.0", "sha256": "1" * 64},
        firings=[{"seq": 1, "rule": rule, "matched": [f"Observation/{n}"], "asserted": ["r1"]}],
        recommendations=[{"id": "rec-stay-active", "action": "stay-active", "urgency": "self-care", "rule": rule}],
        alerts=[], triage="self-care", cards=[{"uuid": str(uuid.uuid4()), "rules": [rule]}], duration_ms=1.0,
        as_of="2026-11-22")


def main(argv: list[str]) -> int:
    url, schema, threads, per_thread = argv[0], argv[1] or None, int(argv[2]), int(argv[3])
    feedback = "--feedback" in argv
    store = AuditStore(AuditStore.open(url, schema=schema).engine, store_input="facts")
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            for i in range(per_thread):
                record = synthetic_record(t * per_thread + i)
                rid = store.record_evaluation(record)
                if feedback and i % 3 == 0:
                    store.record_feedback(FeedbackRecord(card=record.cards[0]["uuid"], outcome="accepted",
                                                         outcome_at=datetime.now(UTC)))
                with lock:
                    ids.append(rid)
        except BaseException as exc:  # noqa: BLE001 - reported below, the test fails on it
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    store.close()
    sys.stdout.write("".join(f"{rid}\n" for rid in ids))
    sys.stderr.write(f"{len(ids)} appends in {elapsed:.2f}s = {len(ids) / elapsed:.0f}/s "
                     f"({threads} threads, pid {os.getpid()})\n")
    for exc in errors:
        sys.stderr.write(f"error: {type(exc).__name__}: {exc}\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
