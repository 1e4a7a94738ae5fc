"""The evaluation object (contract sections 3 and 4) from a finished session."""

from __future__ import annotations

from typing import Any

from cds.domain.facts import Fact, urgency_rank
from cds.evaluation.session import Session


def build(session: Session, *, patient: str | None, as_of: str) -> dict[str, Any]:
    ruleset = session.ruleset
    live = [f for f in session.facts.values()
            if f.type == "recommendation" and f.id not in session.superseded]
    recommendations = [_item(session, group) for group in _groups(live, lambda f: f.get("action"))]
    alerts_ = [f for f in session.facts.values() if f.type == "alert"]
    alerts = [_item(session, group) for group in _groups(alerts_, lambda f: (f.get("action"), f.get("topic")))]
    recommendations.sort(key=lambda r: (urgency_rank(r["urgency"]), r["category"], r["action"]))
    alerts.sort(key=lambda a: (urgency_rank(a["urgency"]), a["action"], a.get("topic") or ""))
    triage = recommendations[0]["urgency"] if recommendations else "none"
    return {
        "patient": patient,
        "asOf": as_of,
        "triage": triage,
        "recommendations": recommendations,
        "alerts": alerts,
        "ruleset": ruleset.identity(),
        "firings": session.firings,
    }


def _groups(facts: list[Fact], key: Any) -> list[list[Fact]]:
    """Facts of one action (and topic) together, most urgent first."""
    groups: dict[Any, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(key(fact), []).append(fact)
    return [sorted(g, key=lambda f: urgency_rank(str(f.get("urgency")))) for g in groups.values()]


def _item(session: Session, group: list[Fact]) -> dict[str, Any]:
    ruleset = session.ruleset
    primary = group[0]
    rule = _rules_by_id(ruleset)[primary.rule or ""]
    action = str(primary.get("action"))
    because = [_node(session, fid) for fid in primary.because]
    for other in group[1:]:
        because.extend(_node(session, fid) for fid in other.because)
    evidence = sorted({leaf for node in because for leaf in _leaves(node)})
    topic = primary.get("topic")
    item: dict[str, Any] = {
        "id": f"{'alert' if primary.type == 'alert' else 'rec'}-{action}" + (f"-{topic}" if topic else ""),
        "action": action,
        "category": ruleset.terminology.actions[action]["category"],
        "urgency": primary.get("urgency"),
        "title": primary.meta.get("title") or ruleset.terminology.actions[action]["title"],
        "rationale": primary.meta.get("rationale", ""),
        "rule": rule.id,
        "guideline": ruleset.guideline(rule.guideline[0]),
        "guidelines": [ruleset.guideline(k) for k in rule.guideline],
        "verify": rule.verify,
        "evidenceNote": rule.evidence_note,
        "evidence": evidence,
        "because": because,
        "codes": [c.as_fhir() for c in ruleset.terminology.action_codings(action)],
    }
    if topic:
        item["topic"] = topic
    also = sorted({f.rule for f in group[1:] if f.rule} | {a["rule"] for f in group for a in session.also.get(f.id, [])}
                  - {rule.id})
    if also:
        item["alsoSuggestedBy"] = also
    return item


_BY_ID: dict[str, dict[str, Any]] = {}


def _rules_by_id(ruleset: Any) -> dict[str, Any]:
    """Rules by id, built once per ruleset content (``key`` names the
    content's sha256); an item used to scan the rules one by one."""
    table = _BY_ID.get(ruleset.key)
    if table is None:
        table = _BY_ID[ruleset.key] = {r.id: r for r in ruleset.rules}
    return table


def _node(session: Session, fact_id: str) -> dict[str, Any]:
    fact = session.facts[fact_id]
    node: dict[str, Any] = {"fact": fact.id, "type": fact.type, "label": fact.label}
    if fact.resource:
        node["resource"] = fact.resource
        if fact.meta.get("date"):
            node["date"] = fact.meta["date"]
        return node
    node["rule"] = fact.rule
    node["because"] = [_node(session, child) for child in fact.because]
    return node


def _leaves(node: dict[str, Any]) -> list[str]:
    if "resource" in node:
        return [node["resource"]]
    return [leaf for child in node.get("because", []) for leaf in _leaves(child)]
