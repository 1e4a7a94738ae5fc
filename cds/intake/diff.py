"""What changed between two evaluations of one patient: pure functions.

Recommendations and alerts are compared by their id (``rec-<action>``,
``alert-<action>[-<topic>]``: stable across evaluations). An item is
*new* when it was not there before, *withdrawn* when it is gone, and
*changed* when its urgency or the rule that emits it moved. Its evidence
alone moving (one more sciatica note) is not a change a clinician must see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds.domain.facts import URGENCIES, urgency_rank

#: triage values, most urgent first; "none" ranks last
TRIAGE_ORDER = (*URGENCIES, "none")
RAISING = ("urgent", "emergency")


def triage_rank(triage: str | None) -> int:
    return TRIAGE_ORDER.index(triage) if triage in TRIAGE_ORDER else len(TRIAGE_ORDER) - 1


def items(evaluation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each recommendation and alert, reduced to what a change is judged and explained by."""
    out: dict[str, dict[str, Any]] = {}
    for kind, key in (("recommendation", "recommendations"), ("alert", "alerts")):
        for item in evaluation.get(key, []):
            out[item["id"]] = {"kind": kind, "id": item["id"], "action": item["action"],
                               "urgency": item["urgency"], "rule": item["rule"], "title": item["title"],
                               "rationale": item.get("rationale", ""), "evidence": list(item.get("evidence", []))}
    return out


def diff(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"new": [...], "changed": [...], "withdrawn": [...]}``, each list most urgent first."""
    new = [dict(after[k]) for k in after if k not in before]
    withdrawn = [dict(before[k]) for k in before if k not in after]
    changed = []
    for key in after:
        if key in before and (after[key]["urgency"] != before[key]["urgency"]
                              or after[key]["rule"] != before[key]["rule"]):
            changed.append({**after[key], "previous": {"urgency": before[key]["urgency"],
                                                       "rule": before[key]["rule"]}})
    order = lambda i: (urgency_rank(i["urgency"]), i["id"])  # noqa: E731 - a sort key
    return {"new": sorted(new, key=order), "changed": sorted(changed, key=order),
            "withdrawn": sorted(withdrawn, key=order)}


def is_empty(change: Mapping[str, list[Any]]) -> bool:
    return not (change["new"] or change["changed"] or change["withdrawn"])


def change_urgency(change: Mapping[str, Iterable[Mapping[str, Any]]], triage: str) -> int:
    """How urgent a change is for the worklist: the most urgent item it touches, or the triage."""
    ranks = [triage_rank(triage)] if not is_empty(change) else [len(TRIAGE_ORDER) - 1]  # type: ignore[arg-type]
    for group in ("new", "changed", "withdrawn"):
        for item in change[group]:
            ranks.append(urgency_rank(item["urgency"]))
            if "previous" in item:
                ranks.append(urgency_rank(item["previous"]["urgency"]))
    return min(ranks)


def triage_rose(before: str, after: str) -> bool:
    """True when the triage moved up to urgent or emergency: what notifications are for."""
    return after in RAISING and triage_rank(after) < triage_rank(before)

