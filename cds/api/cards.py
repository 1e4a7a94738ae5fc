"""An evaluation (contract section 3) as CDS Hooks 2.0 cards, or as a FHIR
GuidanceResponse with a RequestGroup.

Presentation only: every card comes from an item of the evaluation and
carries its reasons. The mapping:

* recommendations are grouped by the rule that made them, one card per
  rule; a card is ``critical`` when its urgency is emergency or it rests on
  a red flag, ``warning`` when urgent, else ``info``; critical cards first;
* each recommendation with a FHIR resource type in the terminology becomes
  a suggestion creating that resource (draft), coded with the action's
  standard codes;
* alerts become ``warning`` cards (``missing-information`` is ``info``
  unless urgent); ``order-not-indicated`` adds a suggestion deleting the
  draft order(s) it rests on and one replacing them with the indicated
  alternative (the recommendations of the rule that raised the alert,
  which then get no card of their own);
* ``detail`` is Markdown that says why: the rationale, the derivation tree
  in words, the guideline links.

No Flask here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds.domain.facts import urgency_rank
from cds.knowledge import Ruleset

SUMMARY_MAX = 140
PRIORITY = {"emergency": "stat", "urgent": "urgent", "routine": "routine", "self-care": "routine"}
INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
OVERRIDE_SYSTEM = "http://spine-cds.local/fhir/CodeSystem/override-reason"
OVERRIDE_REASONS = (
    ("already-addressed", "Already addressed, ordered or done"),
    ("patient-declined", "Patient declined"),
    ("record-incorrect", "The record is incorrect or out of date"),
    ("clinical-judgement", "Not appropriate for this patient in my clinical judgement"),
)
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


@dataclass
class CardContext:
    """What the request adds to the evaluation: whose record, which draft orders."""

    patient: str | None
    draft_orders: Mapping[str, str] = field(default_factory=dict)   # reference -> resourceId
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())


def cards(evaluation: Mapping[str, Any], ruleset: Ruleset, context: CardContext) -> list[dict[str, Any]]:
    """The CDS Hooks cards for one evaluation, most important first."""
    return [card for card, _items in cards_with_items(evaluation, ruleset, context)]


def cards_with_items(evaluation: Mapping[str, Any], ruleset: Ruleset,
                     context: CardContext) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each card with the evaluation items (recommendations, alerts) it stands for."""
    out: list[tuple[tuple[int, int, int], dict[str, Any], list[dict[str, Any]]]] = []
    # An order card that proposes its rule's recommendations as the
    # replacement says all there is to say: no second card for them.
    consumed: set[str] = set()
    alert_cards = []
    for alert in evaluation["alerts"]:
        card, used = _alert_card(alert, evaluation, ruleset, context)
        consumed |= {i["id"] for i in used}
        alert_cards.append((alert, card, [alert, *used]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in evaluation["recommendations"]:
        if rec["id"] not in consumed:
            groups.setdefault(rec["rule"], []).append(rec)
    for order, (rule_id, items) in enumerate(groups.items()):
        card = _recommendation_card(rule_id, items, ruleset, context)
        out.append(((INDICATOR_RANK[card["indicator"]], urgency_rank(items[0]["urgency"]), order), card, items))
    for order, (alert, card, items) in enumerate(alert_cards, start=len(groups)):
        out.append(((INDICATOR_RANK[card["indicator"]], urgency_rank(alert["urgency"]), order), card, items))
    out.sort(key=lambda entry: entry[0])
    return [(card, items) for _key, card, items in out]


def _rests_on_red_flag(item: Mapping[str, Any]) -> bool:
    def walk(nodes: Iterable[Mapping[str, Any]]) -> bool:
        return any(n.get("type") == "red-flag" or walk(n.get("because", [])) for n in nodes)

    return item["rule"].startswith("red-flags/") or walk(item["because"])


def _indicator(items: list[dict[str, Any]]) -> str:
    if any(i["urgency"] == "emergency" or _rests_on_red_flag(i) for i in items):
        return "critical"
    if any(i["urgency"] == "urgent" for i in items):
        return "warning"
    return "info"


def _recommendation_card(rule_id: str, items: list[dict[str, Any]], ruleset: Ruleset,
                         context: CardContext) -> dict[str, Any]:
    rule = _rule(ruleset, rule_id)
    items = sorted(items, key=lambda i: urgency_rank(i["urgency"]))
    primary = items[0]
    suggestions = [s for s in (_create_suggestion(i, ruleset, context) for i in items) if s]
    title = rule.title if rule else primary["title"]
    lines = ["**Suggested:**"]
    lines += [f"- {_md(i['title'])} ({i['urgency']})" for i in items]
    for item in items:
        lines += ["", f"**Why {_md(_lower_first(item['title']))}:** {_md(_squash(item['rationale']))}"]
    lines += _explanation(primary, items, ruleset)
    card = _card(context, summary=title, indicator=_indicator(items), detail="\n".join(lines),
                 primary=primary, ruleset=ruleset, items=items)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "any"
    return card


def _alert_card(alert: dict[str, Any], evaluation: Mapping[str, Any], ruleset: Ruleset,
                context: CardContext) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The card for one alert, and the recommendations it proposes instead."""
    if alert["action"] == "missing-information":
        indicator = "warning" if urgency_rank(alert["urgency"]) <= urgency_rank("urgent") else "info"
    else:
        indicator = "warning"
    orders = _draft_orders(alert, context) if alert["action"] == "order-not-indicated" else []
    summary = alert["title"]
    if orders:
        summary = f"{summary}: {'; '.join(label for _ref, label in orders)}"
    lines = [f"**{_md(alert['title'])}.** {_md(_squash(alert['rationale']))}"]
    suggestions: list[dict[str, Any]] = []
    used: list[dict[str, Any]] = []
    if orders:
        deletes = [{"type": "delete", "description": f"Remove the draft order: {label}",
                    "resourceId": context.draft_orders[ref]} for ref, label in orders]
        suggestions.append({"label": "Remove the draft order" + ("s" if len(orders) > 1 else ""),
                            "uuid": context.new_id(), "actions": deletes})
        alternatives = _alternatives(alert, evaluation, ruleset)
        creates = [a for a in (_create_action(i, ruleset, context) for i in alternatives) if a]
        if creates:
            used = alternatives
            suggestions[0]["isRecommended"] = False
            suggestions.append({
                "label": "Replace with: " + "; ".join(i["title"] for i in alternatives),
                "uuid": context.new_id(), "isRecommended": True, "actions": deletes + creates})
            lines += ["", "**Instead:**"] + [f"- {_md(i['title'])}: {_md(_squash(i['rationale']))}"
                                             for i in alternatives]
    lines += _explanation(alert, [alert], ruleset)
    card = _card(context, summary=summary, indicator=indicator, detail="\n".join(lines), primary=alert,
                 ruleset=ruleset, items=[alert])
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    return card, used


def _card(context: CardContext, *, summary: str, indicator: str, detail: str, primary: Mapping[str, Any],
          ruleset: Ruleset, items: list[dict[str, Any]]) -> dict[str, Any]:
    guideline = primary["guideline"]
    action = ruleset.terminology.actions.get(primary["action"], {})
    card: dict[str, Any] = {
        "uuid": context.new_id(),
        "summary": _summary(summary),
        "indicator": indicator,
        "detail": detail,
        "source": {
            "label": guideline["label"],
            "url": guideline["url"],
            "topic": {"system": ruleset.terminology.system("action"), "code": primary["action"],
                      "display": action.get("title") or primary["title"]},
        },
        "overrideReasons": [{"system": OVERRIDE_SYSTEM, "code": code, "display": display}
                            for code, display in OVERRIDE_REASONS],
    }
    links: dict[str, dict[str, str]] = {}
    for item in items:
        for g in item.get("guidelines") or [item["guideline"]]:
            links.setdefault(g["url"], {"label": g["label"], "url": g["url"], "type": "absolute"})
    if links:
        card["links"] = list(links.values())
    return card


def _explanation(primary: Mapping[str, Any], items: list[dict[str, Any]], ruleset: Ruleset) -> list[str]:
    lines = ["", "**Based on:**"]
    seen: set[str] = set()
    for item in items:
        for node in item["because"]:
            if node["fact"] in seen:
                continue
            seen.add(node["fact"])
            lines += _tree(node, ruleset, 0)
    guidelines: dict[str, Mapping[str, str]] = {}
    for item in items:
        for g in item.get("guidelines") or [item["guideline"]]:
            guidelines.setdefault(g["url"], g)
    lines += ["", "**Guideline:** " + "; ".join(f"[{_md(g['label'])}]({_url(g['url'])})"
                                                for g in guidelines.values())]
    rule = _rule(ruleset, primary["rule"])
    note = f"Rule `{primary['rule']}`"
    if rule is not None:
        note += f" ({_md(rule.title)})"
    note += f", ruleset {ruleset.name} {ruleset.version}."
    if primary.get("evidenceNote"):
        note += f" {_md(_squash(primary['evidenceNote']))}"
    if primary.get("verify"):
        note += " This rule rests on a secondary summary: verify before acting on it alone."
    lines += ["", f"*{note}*"]
    return lines


def _tree(node: Mapping[str, Any], ruleset: Ruleset, depth: int) -> list[str]:
    indent = "  " * depth
    if "resource" in node:
        return [f"{indent}- {_md(node['label'])} (`{_code(node['resource'])}`)"]
    rule = _rule(ruleset, node.get("rule") or "")
    how = f" — concluded by the rule “{_md(rule.title)}”" if rule else ""
    lines = [f"{indent}- {_md(node['label'])}{how}"]
    for child in node.get("because", []):
        lines += _tree(child, ruleset, depth + 1)
    return lines


def _alternatives(alert: Mapping[str, Any], evaluation: Mapping[str, Any], ruleset: Ruleset) -> list[dict[str, Any]]:
    """What the rule that refused an order recommends instead (same rule only).

    The alert's ``topic`` names the refused order, never the alternative,
    so it is not used here.
    """
    return [r for r in evaluation["recommendations"]
            if r["rule"] == alert["rule"] or alert["rule"] in r.get("alsoSuggestedBy", [])]


def _draft_orders(alert: Mapping[str, Any], context: CardContext) -> list[tuple[str, str]]:
    """(reference, label) of the draft orders an alert rests on."""
    found: dict[str, str] = {}

    def walk(nodes: Iterable[Mapping[str, Any]]) -> None:
        for node in nodes:
            ref = node.get("resource")
            if isinstance(ref, str) and ref in context.draft_orders:
                found.setdefault(ref, _order_label(node["label"]))
            walk(node.get("because", []))

    walk(alert["because"])
    return list(found.items())


def _order_label(label: str) -> str:
    label = re.sub(r"\s*\(\d{4}-\d{2}-\d{2}\)$", "", label)
    return label.split(": ", 1)[1] if label.startswith(("Draft order: ", "Order: ")) else label


def _create_suggestion(item: Mapping[str, Any], ruleset: Ruleset, context: CardContext) -> dict[str, Any] | None:
    action = _create_action(item, ruleset, context)
    if action is None:
        return None
    return {"label": item["title"], "uuid": context.new_id(), "isRecommended": True, "actions": [action]}


def _create_action(item: Mapping[str, Any], ruleset: Ruleset, context: CardContext) -> dict[str, Any] | None:
    resource = proposed_resource(item, ruleset, context)
    if resource is None:
        return None
    return {"type": "create", "description": f"{item['title']}: {_squash(item['rationale'])}",
            "resource": resource}


def proposed_resource(item: Mapping[str, Any], ruleset: Ruleset, context: CardContext,
                      rid: str | None = None) -> dict[str, Any] | None:
    """The draft FHIR R4 resource that carries out one recommended action."""
    action = ruleset.terminology.actions.get(item["action"], {})
    rtype = action.get("resource")
    if not rtype:
        return None
    codes = item.get("codes") or [c.as_fhir() for c in ruleset.terminology.action_codings(item["action"])]
    concept = {"coding": codes, "text": item["title"]}
    resource: dict[str, Any] = {"resourceType": rtype, "id": rid or context.new_id()}
    subject = {"reference": context.patient} if context.patient else None
    if rtype == "ServiceRequest":
        resource.update({"status": "draft", "intent": "order", "priority": PRIORITY[item["urgency"]],
                         "code": concept})
    elif rtype == "MedicationRequest":
        resource.update({"status": "draft", "intent": "order", "priority": PRIORITY[item["urgency"]],
                         "medicationCodeableConcept": concept})
    elif rtype == "CommunicationRequest":
        resource.update({"status": "draft", "priority": PRIORITY[item["urgency"]], "category": [concept],
                         "payload": [{"contentString": f"{item['title']}. {_squash(item['rationale'])}"}]})
    else:
        return None
    if subject:
        resource["subject"] = subject
    resource["note"] = [{"text": _squash(item["rationale"])}]
    return resource


def guidance_response(evaluation: Mapping[str, Any], ruleset: Ruleset, *, response_id: str,
                      request_id: str | None = None) -> dict[str, Any]:
    """The evaluation as a FHIR R4 GuidanceResponse whose result is a contained RequestGroup."""
    patient = evaluation.get("patient")
    context = CardContext(patient=patient)
    contained: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    for index, item in enumerate(evaluation["recommendations"]):
        resource = proposed_resource(item, ruleset, context, rid=f"proposal-{index + 1}")
        action = _request_action(item)
        if resource is not None:
            contained.append(resource)
            action["resource"] = {"reference": f"#{resource['id']}"}
        actions.append(action)
    for item in evaluation["alerts"]:
        action = _request_action(item)
        if item["action"] == "order-not-indicated":
            action["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/action-type",
                                          "code": "remove"}]}
        actions.append(action)
    triage = evaluation["triage"]
    group: dict[str, Any] = {
        "resourceType": "RequestGroup", "id": "recommendations", "status": "draft", "intent": "proposal",
        "priority": PRIORITY.get(triage, "routine"),
        "instantiatesUri": [f"urn:cds:ruleset:{ruleset.name}:{ruleset.version}"],
        "note": [{"text": f"Triage: {triage}. Ruleset {ruleset.name} {ruleset.version} "
                          f"(sha256 {ruleset.sha256})."}],
    }
    if patient:
        group["subject"] = {"reference": patient}
    if actions:
        group["action"] = actions
    response: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": response_id,
        "moduleUri": f"urn:cds:ruleset:{ruleset.name}:{ruleset.version}",
        "status": "success",
        "occurrenceDateTime": evaluation["asOf"],
        "contained": [group, *contained],
        "result": {"reference": "#recommendations"},
    }
    if request_id:
        response["requestIdentifier"] = {"system": "urn:cds:request-id", "value": request_id}
    if patient:
        response["subject"] = {"reference": patient}
    return response


def _request_action(item: Mapping[str, Any]) -> dict[str, Any]:
    action: dict[str, Any] = {
        "id": item["id"],
        "title": item["title"],
        "description": _squash(item["rationale"]) or item["title"],
        "priority": PRIORITY[item["urgency"]],
        "code": [{"coding": item.get("codes") or [], "text": item["title"]}],
        "documentation": [{"type": "citation", "display": g["label"], "url": g["url"]}
                          for g in item.get("guidelines") or [item["guideline"]]],
    }
    if not action["code"][0]["coding"]:
        del action["code"][0]["coding"]
    return action


def audit_view(card: Mapping[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """What the audit trail keeps of a card (EvaluationRecord.cards): what it stands for."""
    return {"uuid": card["uuid"], "summary": card["summary"], "indicator": card["indicator"],
            "actions": list(dict.fromkeys(i["action"] for i in items)),
            "items": [i["id"] for i in items],
            "rules": sorted({i["rule"] for i in items}),
            "suggestions": [s["uuid"] for s in card.get("suggestions", [])]}


def _rule(ruleset: Ruleset, rule_id: str) -> Any:
    return next((r for r in ruleset.rules if r.id == rule_id), None)


def _summary(text: str) -> str:
    text = _squash(text)
    return text if len(text) <= SUMMARY_MAX else text[:SUMMARY_MAX - 1].rstrip() + "…"


def _squash(text: str) -> str:
    return " ".join(str(text).split())


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _md(text: str) -> str:
    """Text from data, safe inside Markdown (no markup, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", _squash(text)).replace("&", "&amp;")


def _code(text: str) -> str:
    return str(text).replace("`", "'")


def _url(url: str) -> str:
    return url.replace(" ", "%20").replace(")", "%29").replace("(", "%28")
