"""The service layer of the HTTP API: one function per use case.

Each takes parsed JSON and the verified caller, calls the evaluation core,
records the evaluation through the audit sink, and returns the answer as a
dict; errors are CdsError subclasses the HTTP layer maps once. No Flask
here: the blueprints only parse, call and map.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cds.api import cards as card_views
from cds.api import schemas
from cds.api.auth import Principal, TrustedClients
from cds.api.fhir_client import REQUIRED, FetchLimits, FhirFetcher, missing_keys, templates
from cds.api.metrics import Metrics
from cds.bootstrap import Services
from cds.errors import CdsError, InputError, NotFound, PreconditionFailed, StoreUnavailable
from cds.evaluation.ports import EvaluationRecord, FeedbackRecord


@dataclass(frozen=True)
class CdsService:
    """One CDS Hooks service of the discovery document."""

    id: str
    hook: str
    title: str
    description: str

    def describe(self) -> dict[str, Any]:
        return {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id,
                "prefetch": templates()}


SERVICES: dict[str, CdsService] = {s.id: s for s in (
    CdsService("back-neuropathy-patient-view", "patient-view", "Back neuropathy and back numbness",
               "Red flags first (cauda equina, cord compression, malignancy, infection, fracture), then the "
               "guideline pathway for radicular pain, stenosis and peripheral neuropathy, with safety alerts. "
               "Every card says why and cites its guideline."),
    CdsService("back-neuropathy-order-select", "order-select", "Back imaging and EMG order check (order-select)",
               "Judges draft lumbar imaging, EMG/NCS and spine-surgery orders against the record and the "
               "guidelines: an order not indicated now gets a warning with a safer alternative; red flags "
               "are always shown."),
    CdsService("back-neuropathy-order-sign", "order-sign", "Back imaging and EMG order check (order-sign)",
               "The order-select check again at signing, on the final draft orders."),
)}


def discovery() -> dict[str, Any]:
    return {"services": [s.describe() for s in SERVICES.values()]}


def _canonical_sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _fact_views(facts: list[Any]) -> list[dict[str, Any]]:
    return [{"id": f.id, "type": f.type, "fields": dict(f.fields), "resource": f.resource} for f in facts]


class Api:
    """The use cases behind the HTTP endpoints."""

    def __init__(self, services: Services, metrics: Metrics, *, clients: TrustedClients | None = None,
                 fetcher: FhirFetcher | None = None, now: Callable[[], datetime] | None = None) -> None:
        config = services.config
        self.services = services
        self.evaluator = services.evaluator
        self.ruleset = services.evaluator.ruleset
        self.audit = services.audit
        self.metrics = metrics
        self.clients = clients
        self.fetcher = fetcher or FhirFetcher(FetchLimits(
            timeout_seconds=config.fhir_timeout_seconds, max_pages=config.fhir_max_pages,
            allow_http=config.fhir_allow_http))
        self.now = now or (lambda: datetime.now(UTC))

    def call_hook(self, service_id: str, data: Any, principal: Principal | None) -> dict[str, Any]:
        """CDS Hooks service call: validated request in, cards out (recorded first)."""
        service = SERVICES.get(service_id)
        if service is None:
            raise NotFound(f"no CDS service {service_id[:64]!r}; see GET /cds-services")
        schemas.validate(schemas.hook_request(service.hook), data)
        received = self.now()
        context = data["context"]
        prefetch = dict(data.get("prefetch") or {})
        missing = missing_keys(prefetch)
        if missing and data.get("fhirAuthorization") is not None:
            self._check_fhir_server(data["fhirServer"], principal)
            prefetch.update(self.fetcher.fill(data, missing))
            missing = []
        required = [k for k in missing if k in REQUIRED]
        if required:
            raise PreconditionFailed(
                f"the record's {', '.join(required)} is missing from prefetch and the request grants no "
                "FHIR access (fhirServer with fhirAuthorization) to fetch it", where="prefetch")
        self._check_patient(prefetch, context["patientId"])
        evaluated = {"hook": data["hook"], "hookInstance": data["hookInstance"], "context": context,
                     "prefetch": prefetch}
        base = {"channel": "cds-hooks", "principal": principal, "user": context.get("userId"),
                "hook": data["hook"], "hook_instance": data["hookInstance"], "received": received,
                "data": evaluated, "notes": missing}
        evaluation, facts, duration = self._evaluate(evaluated, received.date(), base)
        draft_orders = _draft_order_ids(context.get("draftOrders"))
        patient = evaluation["patient"] or f"Patient/{context['patientId']}"
        built = card_views.cards_with_items(evaluation, self.ruleset, card_views.CardContext(patient, draft_orders))
        self._record(base, evaluation, facts, duration,
                     cards=[card_views.audit_view(card, items) for card, items in built])
        self.metrics.observe_evaluation(evaluation, "cds-hooks")
        return {"cards": [card for card, _items in built]}

    def evaluate(self, data: Any, as_of: str | None, principal: Principal | None) -> dict[str, Any]:
        """``POST /evaluate``: the contract's evaluation object (recorded first)."""
        received = self.now()
        when = _as_of(as_of) if as_of is not None else received.date()
        base = {"channel": "rest", "principal": principal, "user": None, "hook": None, "hook_instance": None,
                "received": received, "data": data, "notes": []}
        evaluation, facts, duration = self._evaluate(data, when, base)
        self._record(base, evaluation, facts, duration, cards=[])
        self.metrics.observe_evaluation(evaluation, "rest")
        return evaluation

    def guidance_response(self, evaluation: Mapping[str, Any], request_id: str | None) -> dict[str, Any]:
        return card_views.guidance_response(evaluation, self.ruleset, response_id=str(uuid.uuid4()),
                                            request_id=request_id)

    def feedback(self, service_id: str, data: Any, principal: Principal | None) -> dict[str, Any]:
        """Store accepted / overridden outcomes against known card uuids."""
        if service_id not in SERVICES:
            raise NotFound(f"no CDS service {service_id[:64]!r}; see GET /cds-services")
        schemas.validate(schemas.FEEDBACK_REQUEST, data)
        items = data["feedback"]
        for index, item in enumerate(items):
            if not self.audit.card_exists(item["card"]):
                raise NotFound("no card with this uuid was issued by this service",
                               where=f"feedback[{index}].card")
        recorded = []
        for index, item in enumerate(items):
            reason = item.get("overrideReason") or {}
            try:
                outcome_at = datetime.fromisoformat(item["outcomeTimestamp"].replace("Z", "+00:00"))
            except ValueError:
                raise InputError("not an ISO date-time", where=f"feedback[{index}].outcomeTimestamp") from None
            record = FeedbackRecord(
                card=item["card"], outcome=item["outcome"], outcome_at=outcome_at,
                accepted_suggestions=[s["id"] for s in item.get("acceptedSuggestions", [])],
                override_reason=reason.get("reason"), user_comment=reason.get("userComment"),
                client=principal.iss if principal else None,
                # Who decided: the token's subject (CDS Hooks puts the user there; the web
                # pages sign their own tokens with the clinician as subject).
                user=principal.sub if principal else None)
            recorded.append({"card": item["card"], "id": str(self.audit.record_feedback(record))})
        return {"recorded": recorded}

    def rulesets(self) -> dict[str, Any]:
        rs = self.ruleset
        return {"rulesets": [{**rs.identity(), "title": rs.title, "modules": dict(rs.modules),
                              "rules": [r.describe() for r in rs.rules]}]}

    # -- helpers -------------------------------------------------------------

    def _evaluate(self, data: Any, as_of: date, base: dict[str, Any]) -> tuple[dict[str, Any], list[Any], float]:
        started = time.perf_counter()
        try:
            patient, facts = self.evaluator.facts(data, as_of)
            evaluation = self.evaluator.evaluate_facts(patient, facts, as_of)
        except CdsError as exc:
            self._record_failure(base, as_of, exc, time.perf_counter() - started)
            raise
        return evaluation, facts, (time.perf_counter() - started) * 1000

    def _record(self, base: Mapping[str, Any], evaluation: Mapping[str, Any], facts: list[Any],
                duration_ms: float, *, cards: list[dict[str, Any]]) -> None:
        principal: Principal | None = base["principal"]
        record = EvaluationRecord(
            received_at=base["received"], channel=base["channel"],
            client=principal.iss if principal else None, jti=principal.jti if principal else None,
            user=base["user"], hook=base["hook"], hook_instance=base["hook_instance"],
            patient=evaluation["patient"], input_sha256=_canonical_sha256(base["data"]),
            facts=_fact_views(facts), ruleset=dict(evaluation["ruleset"]), firings=list(evaluation["firings"]),
            recommendations=list(evaluation["recommendations"]), alerts=list(evaluation["alerts"]),
            triage=evaluation["triage"], cards=cards, duration_ms=round(duration_ms, 3),
            as_of=evaluation["asOf"])
        self.audit.record_evaluation(record)  # StoreUnavailable -> 503: no answer without a record

    def _record_failure(self, base: Mapping[str, Any], as_of: date, error: CdsError, seconds: float) -> None:
        principal: Principal | None = base["principal"]
        record = EvaluationRecord(
            received_at=base["received"], channel=base["channel"],
            client=principal.iss if principal else None, jti=principal.jti if principal else None,
            user=base["user"], hook=base["hook"], hook_instance=base["hook_instance"], patient=None,
            input_sha256=_canonical_sha256(base["data"]), facts=[], ruleset=self.ruleset.identity(),
            firings=[], recommendations=[], alerts=[], triage="none", duration_ms=round(seconds * 1000, 3),
            outcome="error", error=error.diagnostics[:2000], as_of=as_of.isoformat())
        try:
            self.audit.record_evaluation(record)
        except StoreUnavailable:
            pass  # the client gets the original error; the store's absence shows in /readyz

    def _check_fhir_server(self, server: str, principal: Principal | None) -> None:
        if principal is None or self.clients is None:
            return
        client = self.clients.get(principal.iss)
        if client is not None and client.fhir_servers and server.rstrip("/") not in client.fhir_servers:
            raise PreconditionFailed("fhirServer is not one of this client's registered FHIR servers",
                                     where="fhirServer")

    @staticmethod
    def _check_patient(prefetch: Mapping[str, Any], patient_id: str) -> None:
        found = False
        for key, value in prefetch.items():
            for resource in _resources(value):
                if resource.get("resourceType") != "Patient":
                    continue
                found = True
                rid = resource.get("id")
                if isinstance(rid, str) and rid != patient_id:
                    raise InputError(f"Patient {rid[:64]!r} is not context.patientId {patient_id!r}",
                                     where=f"prefetch.{key}")
        if not found:
            raise PreconditionFailed("the record has no Patient resource (prefetch 'patient' was empty or "
                                     "the FHIR server has no such patient)", where="prefetch.patient")


def _resources(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        entry = value.get("entry")
        entries: list[Any] = entry if isinstance(entry, list) else []
        return [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    return [value]


def _draft_order_ids(bundle: Any) -> dict[str, str]:
    """Reference (as evidence names it) -> relative id for a delete action."""
    out = {}
    for resource in _resources(bundle):
        rid, rtype = resource.get("id"), resource.get("resourceType")
        if isinstance(rid, str) and rid and isinstance(rtype, str):
            out[f"{rtype}/{rid}"] = f"{rtype}/{rid}"
    return out


def _as_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{value[:40]!r} is not a date YYYY-MM-DD", where="as_of") from None
