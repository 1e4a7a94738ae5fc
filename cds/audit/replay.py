"""Replay recorded inputs under another ruleset: the governance impact report.

Each recorded evaluation is evaluated again, on its own evaluation date,
under the candidate ruleset: from the raw request when it was kept
(``CDS_AUDIT_STORE_INPUT=full``: a new ruleset may map codes differently),
else from the recorded normalized facts (``facts``). Records that kept only
digests (``hash``), failed, or were purged by retention are counted as not
replayable. The report says, per evaluation, which actions the candidate
adds and removes, which change urgency, and whether triage changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds.audit.facts_codec import facts_from_dicts
from cds.errors import CdsError
from cds.fhir import parse_json


@dataclass(frozen=True)
class Change:
    evaluation: str
    received_at: str
    patient: str | None
    replayed_from: str                  # "raw" or "facts"
    triage_before: str
    triage_after: str
    added: list[str]
    removed: list[str]
    urgency_changed: list[dict[str, str]]
    error: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.urgency_changed or self.error
                    or self.triage_before != self.triage_after)

    def as_dict(self) -> dict[str, Any]:
        return {"evaluation": self.evaluation, "receivedAt": self.received_at, "patient": self.patient,
                "replayedFrom": self.replayed_from, "changed": self.changed,
                "triage": {"before": self.triage_before, "after": self.triage_after},
                "added": self.added, "removed": self.removed, "urgencyChanged": self.urgency_changed,
                "error": self.error}


@dataclass
class ReplayReport:
    candidate: dict[str, str]
    recorded_rulesets: Counter[str] = field(default_factory=Counter)
    changes: list[Change] = field(default_factory=list)
    not_replayable: Counter[str] = field(default_factory=Counter)

    @property
    def replayed(self) -> int:
        return len(self.changes)

    @property
    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.changed]

    def summary(self) -> dict[str, Any]:
        triage = Counter(f"{c.triage_before} -> {c.triage_after}" for c in self.changes
                         if c.triage_before != c.triage_after)
        added = Counter(a for c in self.changes for a in c.added)
        removed = Counter(a for c in self.changes for a in c.removed)
        return {"candidate": self.candidate, "recordedRulesets": dict(self.recorded_rulesets),
                "replayed": self.replayed, "changed": len(self.changed),
                "errors": sum(1 for c in self.changes if c.error),
                "notReplayable": dict(self.not_replayable), "triageChanges": dict(triage),
                "actionsAdded": dict(added), "actionsRemoved": dict(removed)}

    def as_dict(self, *, changed_only: bool = False) -> dict[str, Any]:
        changes = self.changed if changed_only else self.changes
        return {"summary": self.summary(), "evaluations": [c.as_dict() for c in changes]}


def _actions(evaluation: dict[str, Any]) -> dict[str, str]:
    """Action code (alerts prefixed ``alert:``, with topic) -> urgency."""
    out = {str(r["action"]): str(r.get("urgency")) for r in evaluation.get("recommendations", [])}
    for a in evaluation.get("alerts", []):
        key = f"alert:{a['action']}" + (f"/{a['topic']}" if a.get("topic") else "")
        out[key] = str(a.get("urgency"))
    return out


def replay(evaluator: Any, recorded: Iterable[dict[str, Any]]) -> ReplayReport:
    """Compare each recorded evaluation (with its stored input) with the candidate's answer."""
    report = ReplayReport(candidate=evaluator.ruleset.identity())
    for record in recorded:
        if record.get("kind") != "evaluation":
            continue
        if record.get("outcome") != "success":
            report.not_replayable["failed originally"] += 1
            continue
        stored = record.get("input") or {}
        as_of = date.fromisoformat(record["asOf"]) if record.get("asOf") else None
        if as_of is None:
            report.not_replayable["no evaluation date"] += 1
            continue
        source = "raw" if stored.get("raw") else ("facts" if stored.get("facts") is not None else None)
        if source is None:
            report.not_replayable["input not kept (hash only or purged)"] += 1
            continue
        ruleset = record.get("ruleset") or {}
        report.recorded_rulesets[f"{ruleset.get('name')} {ruleset.get('version')}"] += 1
        before = _actions(record)
        try:
            if source == "raw":
                after_eval = evaluator.evaluate(parse_json(stored["raw"]), as_of)
            else:
                after_eval = evaluator.evaluate_facts(record.get("patient"), facts_from_dicts(stored["facts"]), as_of)
        except CdsError as exc:
            report.changes.append(Change(record["id"], record["receivedAt"], record.get("patient"), source,
                                         record["triage"], "error", [], [], [], error=exc.diagnostics))
            continue
        after = _actions(after_eval)
        report.changes.append(Change(
            evaluation=record["id"], received_at=record["receivedAt"], patient=record.get("patient"),
            replayed_from=source, triage_before=record["triage"], triage_after=after_eval["triage"],
            added=sorted(set(after) - set(before)), removed=sorted(set(before) - set(after)),
            urgency_changed=[{"action": a, "before": before[a], "after": after[a]}
                             for a in sorted(set(before) & set(after)) if before[a] != after[a]]))
    return report


def render_text(report: ReplayReport, *, changed_only: bool = True) -> str:
    s = report.summary()
    cand = s["candidate"]
    lines = [f"Replay under {cand['name']} {cand['version']} (sha256 {cand['sha256'][:12]})",
             f"recorded under: {', '.join(f'{k} ({v})' for k, v in s['recordedRulesets'].items()) or 'nothing'}",
             f"{s['replayed']} replayed, {s['changed']} would change, {s['errors']} failed under the candidate"]
    for reason, n in s["notReplayable"].items():
        lines.append(f"not replayable: {n} ({reason})")
    for move, n in sorted(s["triageChanges"].items()):
        lines.append(f"triage {move}: {n}")
    for action, n in sorted(s["actionsAdded"].items()):
        lines.append(f"+ {action}: {n}")
    for action, n in sorted(s["actionsRemoved"].items()):
        lines.append(f"- {action}: {n}")
    lines.append("")
    for change in (report.changed if changed_only else report.changes):
        head = f"{change.evaluation} {change.received_at} {change.patient or '(no patient)'}"
        if change.error:
            lines.append(f"{head}: FAILS under the candidate: {change.error}")
            continue
        parts = []
        if change.triage_before != change.triage_after:
            parts.append(f"triage {change.triage_before} -> {change.triage_after}")
        parts += [f"+{a}" for a in change.added] + [f"-{a}" for a in change.removed]
        parts += [f"{u['action']} {u['before']} -> {u['after']}" for u in change.urgency_changed]
        lines.append(f"{head}: {'; '.join(parts) if parts else 'unchanged'}")
    return "\n".join(lines)
