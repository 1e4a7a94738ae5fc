"""Walking the hash chain: the first record that was altered, deleted or
inserted out of order. Pure; the store feeds it rows in seq order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cds.audit.canonical import GENESIS, chain_hash


@dataclass(frozen=True)
class ChainRow:
    seq: int
    record_id: str
    kind: str
    prev_hash: str
    hash: str
    content: str


@dataclass(frozen=True)
class Problem:
    seq: int
    record_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" (record {self.record_id})" if self.record_id else ""
        return f"seq {self.seq}{who}: {self.reason}"


@dataclass
class VerifyReport:
    checked: int = 0
    first_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "firstSeq": self.first_seq, "headSeq": self.head_seq,
                "headHash": self.head_hash, "notes": self.notes,
                "problem": None if self.problem is None else {
                    "seq": self.problem.seq, "record": self.problem.record_id, "reason": self.problem.reason}}


class ChainWalker:
    """Feed rows in ascending seq; stops at the first problem.

    ``anchor`` is the content of the latest ``prune`` record, if any: it says
    which leading records were removed on purpose and the hash the first
    kept record must chain to. ``check_content`` may name what else is wrong
    with a record (its index rows or stored input); it returns None when fine.
    """

    def __init__(self, anchor: dict[str, Any] | None = None,
                 check_content: Callable[[ChainRow, dict[str, Any]], str | None] | None = None) -> None:
        self.anchor = anchor
        self.check_content = check_content
        self.report = VerifyReport()
        self._expected_seq: int | None = None
        self._prev_hash = GENESIS

    def feed(self, row: ChainRow) -> bool:
        """Check one row; False once a problem is found (stop feeding)."""
        if self.report.problem is not None:
            return False
        problem = self._check(row)
        if problem:
            self.report.problem = Problem(row.seq, row.record_id, problem)
            return False
        self.report.checked += 1
        self.report.head_seq, self.report.head_hash = row.seq, row.hash
        self._expected_seq, self._prev_hash = row.seq + 1, row.hash
        return True

    def _check(self, row: ChainRow) -> str | None:
        if self._expected_seq is None:
            self.report.first_seq = row.seq
            problem = self._check_start(row)
            if problem:
                return problem
        elif row.seq != self._expected_seq:
            missing = (f"seq {self._expected_seq}" if row.seq == self._expected_seq + 1
                       else f"seqs {self._expected_seq}..{row.seq - 1}")
            return f"{missing} missing before this record (deleted)"
        elif row.prev_hash != self._prev_hash:
            return (f"previous-hash does not match record {row.seq - 1}: inserted out of order, "
                    "or the record before it was altered and rehashed")
        if chain_hash(row.prev_hash, row.content) != row.hash:
            return "content altered: its hash does not match"
        try:
            content = json.loads(row.content)
        except ValueError:
            return "content altered: not valid JSON"
        if content.get("seq") != row.seq or content.get("id") != row.record_id or content.get("kind") != row.kind:
            return "seq, id or kind column altered: differs from the chained content"
        if self.check_content is not None:
            return self.check_content(row, content)
        return None

    def _check_start(self, row: ChainRow) -> str | None:
        if row.seq == 1:
            return None if row.prev_hash == GENESIS else "first record does not chain to the genesis hash"
        anchor = self.anchor
        if anchor is None or anchor.get("prunedThrough") != row.seq - 1:
            return f"seqs 1..{row.seq - 1} missing (deleted) and no prune record accounts for them"
        if anchor.get("lastPrunedHash") != row.prev_hash:
            return "previous-hash does not match the hash the prune record kept for the removed records"
        self.report.notes.append(f"records 1..{row.seq - 1} were pruned by retention (prune record seq "
                                 f"{anchor.get('seq')})")
        return None

    def finish(self, head_seq: int, head_hash: str) -> VerifyReport:
        """Compare with the chain-head row: records removed from the end show here."""
        report = self.report
        if report.problem is None:
            last = report.head_seq
            if head_seq > last:
                report.problem = Problem(last + 1, None, f"seqs {last + 1}..{head_seq} missing at the end (deleted); "
                                                         "the chain head names seq " f"{head_seq}")
            elif head_seq < last:
                report.problem = Problem(head_seq + 1, None, "records after the chain head: appended around the lock")
            elif head_hash != report.head_hash:
                report.problem = Problem(last, None, "chain head hash differs from the last record's hash")
        return report
