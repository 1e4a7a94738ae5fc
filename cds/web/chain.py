"""The chain status an auditor page shows, without walking the whole trail
on every page view. No Flask here.

Verifying the whole chain reads every record (about a second per 2,000
records on SQLite), so the evaluation page uses a report at most
``max_age`` seconds old (the chain page always verifies afresh and renews
it), and checks the record's own link afresh: its content against its
hash, using the store's own canonical form and chain arithmetic.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any

from cds.audit import AuditStore, VerifyReport
from cds.audit.canonical import canonical_json, chain_hash

REPORT_MAX_AGE = 60.0


@dataclass(frozen=True)
class RecordStatus:
    ok: bool
    own_link_ok: bool            # this record's content still hashes to its stored hash
    report: dict[str, Any]       # the whole-chain report used (VerifyReport.as_dict)
    report_age: float            # seconds since that report was made
    seq: int


class ChainStatus:
    """Whole-chain reports shared by the requests of one process."""

    def __init__(self, store: AuditStore, *, max_age: float = REPORT_MAX_AGE) -> None:
        self.store = store
        self.max_age = max_age
        self._lock = threading.Lock()
        self._report: VerifyReport | None = None
        self._made = 0.0

    def fresh(self) -> VerifyReport:
        """Verify the whole chain now (and keep the report for the evaluation pages)."""
        with self._lock:
            self._report, self._made = self.store.verify(), time.monotonic()
            return self._report

    def recent(self) -> tuple[VerifyReport, float]:
        with self._lock:
            if self._report is None or time.monotonic() - self._made > self.max_age:
                self._report, self._made = self.store.verify(), time.monotonic()
            return self._report, time.monotonic() - self._made

    def of_record(self, trace: dict[str, Any]) -> RecordStatus:
        """Status of one record as :meth:`AuditStore.get_evaluation` returned it."""
        report, age = self.recent()
        seq = int(trace["chain"]["seq"])
        if report.head_seq < seq:   # the kept report predates this record: it says nothing about it
            report, age = self.fresh(), 0.0
        own = own_link_ok(trace)
        chain_ok = report.problem is None or report.problem.seq > seq
        return RecordStatus(ok=own and chain_ok, own_link_ok=own, report=report.as_dict(), report_age=age, seq=seq)


def own_link_ok(trace: dict[str, Any]) -> bool:
    """The record's chained content, rebuilt from the trace, hashes to its stored hash."""
    content = copy.deepcopy(trace)
    chain = content.pop("chain")
    content.pop("feedback", None)
    # get_evaluation adds the kept input beside the digests; the chained content has only the digests.
    for added in ("facts", "raw", "purgedAt"):
        content.get("input", {}).pop(added, None)
    return bool(chain_hash(chain["prevHash"], canonical_json(content)) == chain["hash"])
