"""What goes into a chained record, and the index rows derived from it.

Pure functions: the store writes index rows from :func:`index_rows`, and
verify recomputes them with the same function, so an index row that
disagrees with the chained content is found.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cds.audit.canonical import canonical_json, sha256_hex
from cds.evaluation.ports import EvaluationRecord, FeedbackRecord


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and a Z; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def raw_text(raw_input: Any) -> str | None:
    """The raw request as text: bytes and str as received, parsed JSON canonicalized."""
    if raw_input is None:
        return None
    if isinstance(raw_input, bytes):
        try:
            return raw_input.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(raw_input, str):
        return raw_input
    return canonical_json(raw_input)


def evaluation_content(record: EvaluationRecord, *, record_id: str, seq: int, recorded_at: datetime,
                       stored: str, facts_json: str, raw: str | None) -> dict[str, Any]:
    """The chained content of one evaluation (PHI payloads only as digests)."""
    return {
        "kind": "evaluation", "id": record_id, "seq": seq, "recordedAt": iso(recorded_at),
        "receivedAt": iso(record.received_at), "channel": record.channel, "client": record.client,
        "jti": record.jti, "user": record.user, "hook": record.hook, "hookInstance": record.hook_instance,
        "patient": record.patient, "asOf": record.as_of,
        "input": {"sha256": record.input_sha256, "stored": stored, "factCount": len(record.facts),
                  "factsSha256": sha256_hex(facts_json),
                  "rawSha256": sha256_hex(raw) if raw is not None else None},
        "ruleset": dict(record.ruleset), "firings": list(record.firings),
        "recommendations": list(record.recommendations), "alerts": list(record.alerts),
        "triage": record.triage, "cards": list(record.cards), "durationMs": round(record.duration_ms, 3),
        "outcome": record.outcome, "error": record.error,
    }


def feedback_content(feedback: FeedbackRecord, *, record_id: str, seq: int, recorded_at: datetime,
                     evaluation_id: str) -> dict[str, Any]:
    return {
        "kind": "feedback", "id": record_id, "seq": seq, "recordedAt": iso(recorded_at),
        "card": feedback.card, "evaluation": evaluation_id, "outcome": feedback.outcome,
        "outcomeAt": iso(feedback.outcome_at), "acceptedSuggestions": list(feedback.accepted_suggestions),
        "overrideReason": feedback.override_reason, "userComment": feedback.user_comment,
        "client": feedback.client, "user": feedback.user,
    }


def card_rules(card: dict[str, Any], content: dict[str, Any]) -> list[str]:
    """The rules a card stands for: named on the card, else via its items or actions, else all that emitted."""
    items = [*content.get("recommendations", []), *content.get("alerts", [])]
    explicit = card.get("rules") or ([card["rule"]] if card.get("rule") else None)
    if explicit:
        return sorted({str(r) for r in explicit})
    ids = card.get("recommendations") or card.get("items") or (
        [card["recommendation"]] if card.get("recommendation") else None)
    if ids:
        by_id = {item.get("id"): item.get("rule") for item in items}
        return sorted({str(by_id[i]) for i in ids if by_id.get(i)})
    if card.get("actions"):
        # The service's cards name the action they propose (their topic).
        actions = set(card["actions"])
        return sorted({str(item["rule"]) for item in items if item.get("action") in actions and item.get("rule")})
    return sorted({str(item["rule"]) for item in items if item.get("rule")})


def index_rows(content: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows for the read indexes, table by table, parents first."""
    if content["kind"] == "evaluation":
        eid = content["id"]
        ruleset = content.get("ruleset") or {}
        evaluation = {"id": eid, "seq": content["seq"], "received_at": parse_iso(content["receivedAt"]),
                      "channel": content["channel"], "client": content["client"], "user_ref": content["user"],
                      "hook": content["hook"], "hook_instance": content["hookInstance"],
                      "patient": content["patient"], "triage": content["triage"],
                      "ruleset_version": ruleset.get("version"), "outcome": content["outcome"]}
        firings = [{"evaluation_id": eid, "ordinal": i, "rule": str(f.get("rule"))}
                   for i, f in enumerate(content["firings"])]
        actions = [{"evaluation_id": eid, "ordinal": i, "kind": kind, "action": str(item.get("action")),
                    "urgency": item.get("urgency"), "rule": item.get("rule")}
                   for i, (kind, item) in enumerate(
                       [("recommendation", r) for r in content["recommendations"]]
                       + [("alert", a) for a in content["alerts"]])]
        cards = [{"uuid": str(c["uuid"]), "evaluation_id": eid} for c in content["cards"] if c.get("uuid")]
        rules = [{"card": str(c["uuid"]), "rule": rule} for c in content["cards"] if c.get("uuid")
                 for rule in card_rules(c, content)]
        return [("audit_evaluation", [evaluation]), ("audit_firing", firings), ("audit_action", actions),
                ("audit_card", cards), ("audit_card_rule", rules)]
    if content["kind"] == "feedback":
        return [("audit_feedback", [{"id": content["id"], "seq": content["seq"], "card": content["card"],
                                     "outcome": content["outcome"],
                                     "outcome_at": parse_iso(content["outcomeAt"])}])]
    return []
