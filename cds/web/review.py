"""The clinician's use cases behind the review pages, over the service layer
and the audit store. No Flask here.

* A pasted or uploaded FHIR Bundle becomes a CDS Hooks ``patient-view``
  request (the Patient as ``prefetch.patient``, the other resources by
  type as an EHR would prefetch them) and goes through
  :meth:`cds.api.service.Api.call_hook`: the same validation, evaluation,
  cards and audit record as any EHR call. The signed-in person is the
  ``userId`` (``Practitioner/<username>``) and the client is
  ``cds-web:<username>``.
* The review page is drawn from the recorded evaluation (the trail), so
  what the clinician sees is what was recorded, and an evaluation can be
  opened again later.
* Accept and override go through :meth:`Api.feedback`, the CDS Hooks
  feedback path.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, timedelta
from typing import Any

from cds.api.auth import Principal
from cds.api.cards import OVERRIDE_REASONS, OVERRIDE_SYSTEM
from cds.api.fhir_client import PREFETCH
from cds.api.service import SERVICES, Api
from cds.audit import AuditStore
from cds.audit.records import card_rules
from cds.domain.facts import urgency_rank
from cds.errors import CdsError, InputError, NotFound
from cds.evaluation.ports import EvaluationRecord, FeedbackRecord
from cds.fhir import parse_json
from cds.web.users import WebUser

URGENCIES = ("emergency", "urgent", "routine", "self-care")
PATIENT_VIEW = "back-neuropathy-patient-view"
WEB_CLIENT = "cds-web"
#: how far back "recent evaluations" look, and how many records at most are read to find them
RECENT_DAYS = 90
_RECENT_PAGES = 20


def principal_for(user: WebUser) -> Principal:
    """The caller as the service layer records it: this web sign-in, one id per request."""
    return Principal(iss=f"{WEB_CLIENT}:{user.name}", jti=f"web-{uuid.uuid4()}", sub=user.practitioner)


def hook_request(data: Any, user: WebUser, *, hook_instance: str | None = None) -> dict[str, Any]:
    """A patient-view request carrying one patient's Bundle as prefetch."""
    return _hook_request(data, user, hook_instance)[0]


def _hook_request(data: Any, user: WebUser, hook_instance: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The request, and where each prefetch place came from in the pasted Bundle (for error messages)."""
    if not isinstance(data, dict) or data.get("resourceType") not in ("Bundle", "Patient"):
        raise InputError("expected a FHIR Bundle (resourceType 'Bundle') with the patient's record",
                         where="resourceType")
    entry = data.get("entry")
    entries: list[Any] = [{"resource": data}] if data["resourceType"] == "Patient" else (
        entry if isinstance(entry, list) else [])
    patients = [e for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise InputError(f"the Bundle must hold exactly one Patient; it holds {len(patients)}", where="entry")
    patient = patients[0]["resource"]
    if not isinstance(patient.get("id"), str) or not patient["id"]:
        raise InputError("the Patient needs an id (it becomes context.patientId)",
                         where=f"entry[{entries.index(patients[0])}].resource.id")
    prefetch: dict[str, Any] = {"patient": patient}
    origin = {"prefetch.patient": f"entry[{entries.index(patients[0])}]",
              "context.patientId": f"entry[{entries.index(patients[0])}].resource.id"}
    by_type = {rtype: key for key, (_query, rtype) in PREFETCH.items()}
    groups: dict[str, list[Any]] = {key: [] for key in PREFETCH if key != "patient"}
    groups["other"] = []
    for index, entry in enumerate(entries):
        if entry is patients[0]:
            continue
        resource = entry.get("resource") if isinstance(entry, dict) else None
        key = by_type.get(str(resource.get("resourceType"))) if isinstance(resource, dict) else None
        # Resources of other types (or malformed entries) still reach the evaluator
        # under "other": it ignores what it does not read and names what is wrong.
        group = groups[key if key and key != "patient" else "other"]
        origin[f"prefetch.{key if key and key != 'patient' else 'other'}.entry[{len(group)}]"] = f"entry[{index}]"
        group.append(entry)
    for key, items in groups.items():
        if items or key != "other":
            kind = "collection" if key == "other" else "searchset"
            prefetch[key] = {"resourceType": "Bundle", "type": kind, "entry": items} if items else None
    request = {"hook": "patient-view", "hookInstance": hook_instance or str(uuid.uuid4()),
               "context": {"userId": user.practitioner, "patientId": patient["id"]}, "prefetch": prefetch}
    return request, origin


_PREFETCH_PLACE = re.compile(r"prefetch\.\w+(?:\.entry\[\d+\])?|context\.patientId")


def _in_bundle_terms(error: CdsError, origin: dict[str, str]) -> None:
    """Name the place in the pasted Bundle, not in the prefetch made from it."""
    def swap(text: str) -> str:
        return _PREFETCH_PLACE.sub(lambda m: origin.get(m.group(0), m.group(0)), text)

    error.message = swap(error.message)
    error.where = swap(error.where) if error.where else error.where
    error.args = (error.diagnostics,)


class _KeepId:
    """An AuditSink that passes records to the store and keeps the id of the evaluation it wrote."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.evaluation_id: str | None = None

    def record_evaluation(self, record: EvaluationRecord) -> str:
        self.evaluation_id = self.store.record_evaluation(record)
        return self.evaluation_id

    def record_feedback(self, feedback: FeedbackRecord) -> str:
        return self.store.record_feedback(feedback)

    def card_exists(self, card_uuid: str) -> bool:
        return self.store.card_exists(card_uuid)


@dataclass
class CardView:
    """One card of a recorded evaluation with the items it stands for."""

    uuid: str
    summary: str
    indicator: str
    kind: str                                   # "recommendation" or "alert"
    items: list[dict[str, Any]]
    suggestions: list[str]
    urgency: str
    feedback: list[dict[str, Any]] = field(default_factory=list)

    @property
    def can_accept(self) -> bool:
        # CDS Hooks feedback: "accepted" names the suggestions taken.
        return bool(self.suggestions)

    @property
    def last_feedback(self) -> dict[str, Any] | None:
        return self.feedback[-1] if self.feedback else None


@dataclass
class ReviewView:
    """What the review page shows, most important first."""

    id: str
    trace: dict[str, Any]
    triage: str
    #: (urgency, its recommendation cards, its recommendations with no card of their own:
    #: evaluations recorded from /evaluate, or alternatives proposed on an alert card)
    groups: list[tuple[str, list[CardView], list[dict[str, Any]]]]
    alerts: list[CardView]
    rule_titles: dict[str, str]

    @property
    def cards(self) -> list[CardView]:
        return [c for _u, cards, _loose in self.groups for c in cards] + self.alerts


class Review:
    """The clinician's use cases."""

    def __init__(self, api: Api, store: AuditStore) -> None:
        self.api = api
        self.store = store

    @property
    def rule_titles(self) -> dict[str, str]:
        return {r.id: r.title for r in self.api.ruleset.rules}

    def evaluate_bundle(self, body: bytes | str, user: WebUser) -> str:
        """Evaluate a pasted or uploaded Bundle as a patient-view call; the recorded evaluation's id."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if not raw.strip():
            raise InputError("paste a FHIR Bundle or choose a file", where="bundle")
        request, origin = _hook_request(parse_json(raw), user, None)
        keeper = _KeepId(self.store)
        # The same use case an EHR calls, with a sink that hands back the record id.
        api = Api(replace(self.api.services, audit=keeper), self.api.metrics, clients=self.api.clients,
                  fetcher=self.api.fetcher, now=self.api.now)
        try:
            api.call_hook(PATIENT_VIEW, request, principal_for(user))
        except CdsError as error:
            _in_bundle_terms(error, origin)
            raise
        if keeper.evaluation_id is None:  # pragma: no cover - call_hook records before it returns
            raise NotFound("the evaluation was not recorded")
        return keeper.evaluation_id

    def open(self, evaluation_id: str) -> ReviewView:
        return review_view(evaluation_id, self.store.get_evaluation(evaluation_id), self.rule_titles)

    def recent(self, *, patient: str | None = None, user: str | None = None,
               days: int = RECENT_DAYS, limit: int = 20) -> list[dict[str, Any]]:
        """The latest evaluations of a patient (or by a user), newest first."""
        since = self.api.now() - timedelta(days=days)
        kept: list[dict[str, Any]] = []
        after = None
        for _page in range(_RECENT_PAGES):
            page = self.store.list_evaluations(patient=patient or None, user=user or None, since=since,
                                               after=after, limit=500)
            kept = (kept + page.items)[-limit:]
            if page.next_after is None:
                break
            after = page.next_after
        return list(reversed(kept))

    def feedback(self, evaluation_id: str, card_uuid: str, user: WebUser, *, outcome: str,
                 reason: str | None = None, comment: str | None = None) -> str:
        """Accept or override one card of an evaluation, through the CDS Hooks feedback path."""
        view = self.open(evaluation_id)
        card = next((c for c in view.cards if c.uuid == card_uuid), None)
        if card is None:
            raise NotFound("this evaluation has no such card", where="card")
        item: dict[str, Any] = {"card": card.uuid, "outcome": outcome,
                                "outcomeTimestamp": self.api.now().astimezone(UTC).isoformat()}
        comment = (comment or "").strip() or None
        if outcome == "accepted":
            if not card.suggestions:
                raise InputError("this card proposes nothing to accept; override it with a reason, or leave it",
                                 where="outcome")
            item["acceptedSuggestions"] = [{"id": s} for s in accepted_suggestions(card)]
        elif outcome == "overridden":
            codes = dict(OVERRIDE_REASONS)
            if reason and reason not in codes:
                raise InputError("not one of the card's override reasons", where="reason")
            if not reason and not comment:
                raise InputError("choose a reason or write one", where="reason")
            override: dict[str, Any] = {}
            if reason:
                override["reason"] = {"system": OVERRIDE_SYSTEM, "code": reason, "display": codes[reason]}
            if comment:
                override["userComment"] = comment[:4000]
            item["overrideReason"] = override
        else:
            raise InputError("outcome is accepted or overridden", where="outcome")
        answer = self.api.feedback(service_for(view.trace.get("hook")), {"feedback": [item]}, principal_for(user))
        return str(answer["recorded"][0]["id"])


def accepted_suggestions(card: CardView) -> list[str]:
    """What "Accept" takes: every suggestion of a recommendation card (they are "any"); on an
    alert card (at most one) the recommended one, which cds.api.cards puts last."""
    return list(card.suggestions) if card.kind == "recommendation" else card.suggestions[-1:]


def service_for(hook: str | None) -> str:
    """The CDS service whose hook produced an evaluation (feedback is posted to it)."""
    return next((s.id for s in SERVICES.values() if s.hook == hook), PATIENT_VIEW)


def review_view(evaluation_id: str, trace: dict[str, Any], rule_titles: dict[str, str]) -> ReviewView:
    """Cards of a recorded evaluation with their items, grouped by urgency, alerts apart."""
    alerts_by_action: dict[str, list[dict[str, Any]]] = {}
    for alert in trace.get("alerts", []):
        alerts_by_action.setdefault(alert["action"], []).append(alert)
    feedback: dict[str, list[dict[str, Any]]] = {}
    for item in trace.get("feedback", []):
        feedback.setdefault(item["card"], []).append(item)
    rec_cards: list[CardView] = []
    alert_cards: list[CardView] = []
    carded: set[str] = set()
    recs = {r["id"]: r for r in trace.get("recommendations", [])}
    alerts_by_id = {a["id"]: a for a in trace.get("alerts", [])}
    for card in trace.get("cards", []):
        if card.get("items"):
            # The card names the items it stands for (an order card: its alert and the alternatives).
            alerts = [alerts_by_id[i] for i in card["items"] if i in alerts_by_id]
            items = alerts + [recs[i] for i in card["items"] if i in recs]
            kind = "alert" if alerts else "recommendation"
        else:
            # Older records name only the card's action: attribute by rule, as the store does.
            rules = set(card_rules(card, trace))
            alerts = [a for action in card.get("actions") or [] for a in alerts_by_action.get(action, [])
                      if a.get("rule") in rules]
            items = alerts or [r for r in recs.values() if r.get("rule") in rules and r["id"] not in carded]
            kind = "alert" if alerts else "recommendation"
        items = sorted(items, key=lambda i: urgency_rank(i["urgency"]))
        carded |= {i["id"] for i in items}
        view = CardView(uuid=card["uuid"], summary=card.get("summary", ""), indicator=card.get("indicator", "info"),
                        kind=kind, items=items, suggestions=list(card.get("suggestions") or []),
                        urgency=items[0]["urgency"] if items else "routine",
                        feedback=feedback.get(card["uuid"], []))
        (alert_cards if kind == "alert" else rec_cards).append(view)
    indicator_rank = {"critical": 0, "warning": 1, "info": 2}
    rec_cards.sort(key=lambda c: (urgency_rank(c.urgency), indicator_rank.get(c.indicator, 3)))
    uncarded = [r for r in recs.values() if r["id"] not in carded]
    groups = [(u, [c for c in rec_cards if c.urgency == u], [r for r in uncarded if r["urgency"] == u])
              for u in URGENCIES]
    return ReviewView(id=evaluation_id, trace=trace, triage=trace.get("triage", "none"),
                      groups=[g for g in groups if g[1] or g[2]], alerts=alert_cards, rule_titles=rule_titles)
