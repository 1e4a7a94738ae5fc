"""Recorded evaluations as FHIR R4 AuditEvent and Provenance resources.

One AuditEvent per evaluation: action E (execute), the user as requestor,
the calling EHR client as an application, this service as a Device; the
patient, the ruleset (knowledge artifact), the CDS Hooks hookInstance and
every fired rule as entities. One Provenance per recommendation and alert:
its target is the resource the service proposes (by a stable identifier,
since the EHR assigns the id when it accepts), the input resources it rests
on are ``source`` entities and the ruleset is the ``derivation``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

SERVICE_DEVICE = {"identifier": {"system": "http://spine-cds.local/fhir/NamingSystem/service",
                                 "value": "cds-back-neuropathy"},
                  "type": "Device", "display": "Back neuropathy CDS rules service"}
RULE_SYSTEM = "http://spine-cds.local/fhir/NamingSystem/rule"
RULESET_SYSTEM = "http://spine-cds.local/fhir/NamingSystem/ruleset"
RECOMMENDATION_SYSTEM = "http://spine-cds.local/fhir/NamingSystem/recommendation"
EVALUATION_SYSTEM = "http://spine-cds.local/fhir/NamingSystem/evaluation"
ACTION_SYSTEM = "http://spine-cds.local/fhir/CodeSystem/action"

_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"

#: the FHIR resource a suggestion of each action category becomes
_PROPOSED_TYPE = {"medication": "MedicationRequest", "self-care": "CommunicationRequest",
                  "advice": "CommunicationRequest", "alert": "DetectedIssue"}


def audit_event(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The FHIR R4 AuditEvent for one recorded evaluation's content."""
    success = evaluation.get("outcome") == "success"
    ruleset = evaluation.get("ruleset") or {}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": evaluation["id"],
        "type": {"system": _DCM, "code": "110112", "display": "Query"},
        "subtype": [{"system": "http://spine-cds.local/fhir/CodeSystem/audit-event-subtype",
                     "code": evaluation.get("hook") or evaluation.get("channel") or "evaluate",
                     "display": f"CDS evaluation ({evaluation.get('channel')})"}],
        "action": "E",
        "period": {"start": evaluation["receivedAt"], "end": evaluation["recordedAt"]},
        "recorded": evaluation["recordedAt"],
        "outcome": "0" if success else "8",
        "agent": _agents(evaluation),
        "source": {"site": "cds-back-neuropathy", "observer": SERVICE_DEVICE,
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": _entities(evaluation, ruleset),
    }
    if not success:
        event["outcomeDesc"] = (evaluation.get("error") or "evaluation failed")[:1000]
    return event


def _agents(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = []
    user = evaluation.get("user")
    agents.append({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                             "code": "humanuser", "display": "human user"}]},
        "who": _reference(user) if user else {"display": "user not stated by the client"},
        "requestor": True,
    })
    client = evaluation.get("client")
    if client:
        agent: dict[str, Any] = {
            "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:ietf:rfc:3986", "value": client}, "display": "EHR client (iss)"},
            "requestor": False,
        }
        if evaluation.get("jti"):
            agent["altId"] = evaluation["jti"]
        agents.append(agent)
    agents.append({
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": SERVICE_DEVICE, "requestor": False,
    })
    return agents


def _entities(evaluation: dict[str, Any], ruleset: dict[str, Any]) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if evaluation.get("patient"):
        entities.append({"what": _reference(evaluation["patient"]),
                         "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}})
    entities.append({
        "what": {"identifier": {"system": RULESET_SYSTEM, "value": f"{ruleset.get('name')}|{ruleset.get('version')}"},
                 "display": f"ruleset {ruleset.get('name')} {ruleset.get('version')}"},
        "type": {"system": _RESOURCE_TYPES, "code": "Library", "display": "Library"},
        "role": {"system": _OBJECT_ROLE, "code": "5", "display": "Master file"},
        "name": "ruleset",
        "detail": [{"type": "sha256", "valueString": str(ruleset.get("sha256"))},
                   {"type": "input-sha256", "valueString": str(evaluation.get("input", {}).get("sha256"))}],
    })
    if evaluation.get("hookInstance"):
        entities.append({
            "what": {"identifier": _hook_instance(evaluation["hookInstance"])},
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": _OBJECT_ROLE, "code": "20", "display": "Job"},
            "name": "hookInstance",
            "detail": [{"type": "hook", "valueString": str(evaluation.get("hook"))}],
        })
    fired: dict[str, int] = {}
    for firing in evaluation.get("firings", []):
        fired[str(firing.get("rule"))] = fired.get(str(firing.get("rule")), 0) + 1
    for rule, count in fired.items():
        entities.append({
            "what": {"identifier": {"system": RULE_SYSTEM, "value": rule}, "display": f"rule {rule}"},
            "type": {"system": _RESOURCE_TYPES, "code": "PlanDefinition", "display": "PlanDefinition"},
            "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "name": rule,
            "detail": [{"type": "firings", "valueString": str(count)}],
        })
    return entities


def provenances(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One Provenance per recommendation and alert of a recorded evaluation."""
    ruleset = evaluation.get("ruleset") or {}
    out = []
    for kind, items in (("recommendation", evaluation.get("recommendations", [])),
                        ("alert", evaluation.get("alerts", []))):
        for item in items:
            proposed = ("DetectedIssue" if kind == "alert"
                        else _PROPOSED_TYPE.get(item.get("category"), "ServiceRequest"))
            entities: list[dict[str, Any]] = [{"role": "source", "what": _reference(ref)}
                                              for ref in item.get("evidence", [])]
            entities.append({"role": "derivation", "what": {
                "identifier": {"system": RULESET_SYSTEM, "value": f"{ruleset.get('name')}|{ruleset.get('version')}"},
                "display": f"ruleset {ruleset.get('name')} {ruleset.get('version')} "
                           f"(sha256 {ruleset.get('sha256')}), rule {item.get('rule')}"}})
            provenance: dict[str, Any] = {
                "resourceType": "Provenance",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{EVALUATION_SYSTEM}/{evaluation['id']}/{item['id']}")),
                "target": [{"type": proposed, "display": item.get("title"),
                            "identifier": {"system": RECOMMENDATION_SYSTEM,
                                           "value": f"{evaluation['id']}/{item['id']}"}}],
                "recorded": evaluation["recordedAt"],
                "policy": sorted({g["url"] for g in item.get("guidelines") or [item.get("guideline") or {}]
                                  if g.get("url")}),
                "activity": {"coding": [{"system": ACTION_SYSTEM, "code": str(item.get("action"))}],
                             "text": f"{kind}: {item.get('action')} ({item.get('urgency')})"},
                "agent": [{"type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": "assembler", "display": "Assembler"}]}, "who": SERVICE_DEVICE}],
                "entity": entities,
            }
            if evaluation.get("user"):
                provenance["agent"][0]["onBehalfOf"] = _reference(evaluation["user"])
            out.append(provenance)
    return out


def export_ndjson(evaluations: Iterable[dict[str, Any]], out: IO[str]) -> tuple[int, int]:
    """Write AuditEvents and Provenances as NDJSON; return how many of each."""
    events = provs = 0
    for resource in resources(evaluations):
        out.write(json.dumps(resource, separators=(",", ":"), ensure_ascii=False) + "\n")
        if resource["resourceType"] == "AuditEvent":
            events += 1
        else:
            provs += 1
    return events, provs


def resources(evaluations: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for evaluation in evaluations:
        yield audit_event(evaluation)
        yield from provenances(evaluation)


def _reference(ref: str) -> dict[str, Any]:
    """A literal reference when it reads as Type/id (or a URL), else an identifier."""
    if "/" in ref or ref.startswith("urn:"):
        return {"reference": ref}
    return {"identifier": {"value": ref}, "display": ref}


def _hook_instance(value: str) -> dict[str, str]:
    try:
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(value)}"}
    except ValueError:
        return {"value": value}
