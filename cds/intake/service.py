"""The intake use cases: accept posted resources, re-evaluate, diff, worklist, subscriptions.

No Flask here. One post is handled as:

1. parse and validate every resource on its own (a bad one is a 400 naming
   its entry; nothing is read or written);
2. read the touched patients' records (short read transaction);
3. apply the post in memory, and for each patient whose record changed,
   evaluate the new record and **commit its audit record** through
   ``cds.audit.recording.evaluate_and_record`` (channel ``intake``), the
   path every evaluation takes: if the audit cannot be written the post
   fails with 503 here and nothing of it has been stored;
4. write the new resource versions, the evaluation's difference from the
   previous one, its worklist cards and its notifications in **one**
   database transaction, guarded by a compare-and-swap on each patient's
   record version.

So a post is never half-applied: it is either wholly in the record (with
its audit record) or not at all. The only leftover of a failed step 4 (the
database failing between the two commits, or another process posting for
the same patient first) is an audit record of an evaluation that was never
applied: the trail may hold more evaluations than were answered, never
fewer. Re-evaluation is synchronous: the EHR's post returns after it, so
the answer can say the record is evaluated, and tests need no queue.
Concurrent posts for one patient are serialized per process by a striped
lock, and across processes by the compare-and-swap (the loser starts over,
at most three times, then gets 409).
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import structlog

from cds.api import cards as card_views
from cds.audit.recording import Caller as AuditCaller
from cds.audit.recording import evaluate_and_record
from cds.errors import CdsError
from cds.evaluation import Evaluator
from cds.evaluation.ports import AuditSink
from cds.fhir.normalize import Normalizer
from cds.fhir.record import MAX_RESOURCES, Entry, Record
from cds.intake import diff as changes
from cds.intake import requests as rq
from cds.intake.errors import ResourceConflict, TooManyEntries, UnknownPatient, VersionConflict
from cds.intake.notify import Notifier, notification_bundle
from cds.intake.store import PatientPlan, RecordChanged, RecordStore, ResourceWrite, State

log = structlog.get_logger("cds.intake")

ATTEMPTS = 3
_STRIPES = 64
WITHDRAWN_SYSTEM = "http://spine-cds.local/fhir/CodeSystem/intake-change"


@dataclass(frozen=True)
class Client:
    """Who posts: the EHR client's ``iss`` ("" with authentication off) names its patients' space."""

    iss: str = ""
    jti: str | None = None


@dataclass
class Outcome:
    """What happened to one posted resource."""

    op: rq.Operation
    status: int                     # 201 created, 200 updated / unchanged / found
    version: int
    resource: dict[str, Any]
    last_modified: str
    note: str | None = None         # "unchanged", "exists", "ignored"

    @property
    def location(self) -> str:
        return f"{self.op.rtype}/{self.op.rid}/_history/{self.version}"


@dataclass
class PostResult:
    outcomes: list[Outcome]
    evaluations: list[dict[str, Any]] = field(default_factory=list)   # per evaluated patient
    notifications: int = 0


class IntakeService:
    def __init__(self, store: RecordStore, evaluator: Evaluator, audit: AuditSink, *,
                 notifier: Notifier | None = None, now: Callable[[], datetime] | None = None,
                 on_commit: Callable[[], None] | None = None, worklist_url: str = "/worklist",
                 observe: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.evaluator = evaluator
        self.ruleset = evaluator.ruleset
        self.audit = audit
        self.notifier = notifier
        self.now = now or (lambda: datetime.now(UTC))
        self.on_commit = on_commit
        self.worklist_url = worklist_url
        self.observe = observe
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    # -- posting --------------------------------------------------------------

    def transaction(self, ops: list[rq.Operation], client: Client) -> PostResult:
        """All of ``ops`` or none of them; one evaluation per patient whose record changed."""
        as_of = self.now().date()
        live = [op for op in ops if not op.ignored]
        for op in live:
            self._validate(op, as_of)
            op.patient_id = rq.patient_of(op)
        patients = sorted({op.patient_id for op in live})
        with self._patient_locks(client.iss, patients):
            for _attempt in range(ATTEMPTS):
                try:
                    result = self._apply(ops, live, patients, client)
                except RecordChanged:
                    continue
                if result.notifications and self.on_commit is not None:
                    self.on_commit()
                return result
        raise ResourceConflict("the record of this patient was changed by concurrent posts; retry",
                               where=live[0].label if live else None)

    def batch(self, items: list[rq.Operation | CdsError], client: Client) -> list[Outcome | CdsError]:
        """Each entry on its own, as its own transaction."""
        out: list[Outcome | CdsError] = []
        for item in items:
            if isinstance(item, CdsError):
                out.append(item)
                continue
            try:
                out.append(self.transaction([item], client).outcomes[0])
            except CdsError as exc:
                out.append(exc)
        return out

    def _validate(self, op: rq.Operation, as_of: date) -> None:
        """The resource alone through the same reader the evaluation uses (errors name the entry)."""
        Normalizer(self.ruleset.terminology, as_of).facts(Record([Entry(op.where, op.resource, None)]))

    def _apply(self, ops: list[rq.Operation], live: list[rq.Operation], patients: list[str],
               client: Client) -> PostResult:
        conditionals = [(op.rtype, k, v) for op in live for k, v in (op.if_none_exist or {}).items()]
        state = self.store.read(client.iss, patients, [(op.rtype, op.rid) for op in live], conditionals,
                                self.notifier.subscribers_for if self.notifier else None)
        at = self.now()
        stamp = _instant(at)
        post_id = str(uuid.uuid4())
        outcomes: list[Outcome] = []
        writes: dict[str, list[tuple[rq.Operation, ResourceWrite, dict[str, Any]]]] = {}
        for op in ops:
            if op.ignored:
                outcomes.append(Outcome(op, 200, 0, op.resource, stamp, "ignored"))
                continue
            found = self._conditional(op, state)
            if found is not None:
                outcomes.append(found)
                continue
            current = state.by_ref.get((op.rtype, op.rid))
            known = state.patients.get(op.patient_id)
            if current is not None and (known is None or current.patient_pk != known.pk):
                raise ResourceConflict(f"{op.reference} belongs to another patient's record; a resource cannot "
                                       "move: mark it entered-in-error and post a new one", where=op.label)
            if op.if_match is not None and (current is None or current.version != op.if_match):
                have = f"version {current.version}" if current else "no version"
                raise VersionConflict(f"If-Match asks for version {op.if_match} but the server has {have}",
                                      where=op.label)
            sha = rq.content_sha256(op.resource)
            if current is not None and current.sha256 == sha:
                outcomes.append(Outcome(op, 200, current.version, json.loads(current.content), stamp, "unchanged"))
                continue
            if current is not None and op.method == "POST":
                raise ResourceConflict(f"{op.reference} exists with other content: update it with PUT "
                                       f"(If-Match: W/\"{current.version}\")", where=op.label)
            version = current.version + 1 if current else 1
            stored = {**op.resource, "meta": {**(op.resource.get("meta") or {}), "versionId": str(version),
                                              "lastUpdated": stamp}}
            write = ResourceWrite(op.rtype, op.rid, version, sha, json.dumps(stored, separators=(",", ":")),
                                  _status(op.resource), rq.identifiers(op.resource))
            writes.setdefault(op.patient_id, []).append((op, write, stored))
            outcomes.append(Outcome(op, 201 if current is None else 200, version, stored, stamp))
        for op in live:
            if op.patient_id not in state.patients and not any(
                    o.rtype == "Patient" for o, _w, _s in writes.get(op.patient_id, [])):
                raise UnknownPatient(f"Patient/{op.patient_id} is not on record: post the Patient first "
                                     f"(PUT /fhir/Patient/{op.patient_id}) or in the same transaction",
                                     where=op.label)
        plans = [self._evaluate(client, pid, state, writes[pid], post_id, at) for pid in patients if pid in writes]
        if plans:
            self.store.commit(client.iss, [p for p, _e in plans], post_id, at)
            for plan, evaluation in plans:
                log.info("intake_evaluation", triage=plan.triage, changed=plan.evaluation["changed"],
                         resources=len(plan.writes), notifications=len(plan.notifications))
                if self.observe is not None:
                    self.observe(evaluation)
        return PostResult(outcomes, [{"patient": f"Patient/{p.patient_id}", **p.evaluation} for p, _e in plans],
                          sum(len(p.notifications) for p, _e in plans))

    def _conditional(self, op: rq.Operation, state: State) -> Outcome | None:
        if not op.if_none_exist:
            return None
        sets = [set(state.matches.get((op.rtype, k, v), [])) for k, v in op.if_none_exist.items()]
        found = set.intersection(*sets) if sets else set()
        if len(found) > 1:
            raise VersionConflict(f"If-None-Exist matches {len(found)} resources", where=op.label)
        if not found:
            return None
        rid = found.pop()
        current = state.by_ref.get((op.rtype, rid))
        if current is None:
            return None
        op.rid = rid
        return Outcome(op, 200, current.version, json.loads(current.content), _instant(self.now()), "exists")

    def _evaluate(self, client: Client, patient_id: str, state: State,
                  writes: list[tuple[rq.Operation, ResourceWrite, dict[str, Any]]], post_id: str,
                  at: datetime) -> tuple[PatientPlan, dict[str, Any]]:
        known = state.patients.get(patient_id)
        record = {key: json.loads(r.content) for key, r in (state.record.get(known.pk, {}) if known else {}).items()}
        for op, _write, stored in writes:
            record[(op.rtype, op.rid)] = stored
        if len(record) > MAX_RESOURCES:
            raise TooManyEntries(f"the record of Patient/{patient_id} would hold {len(record)} resources; "
                                 f"the limit is {MAX_RESOURCES}", where=writes[0][0].label)
        ordered = sorted(record.items(), key=lambda kv: (kv[0][0] != "Patient", kv[0]))
        bundle = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"fullUrl": f"{t}/{i}", "resource": r} for (t, i), r in ordered]}
        before_items = known.last_items if known else {}
        before_triage = known.triage if known else "none"
        patient_ref = f"Patient/{patient_id}"
        built: dict[str, Any] = {}

        def make_cards(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
            pairs = card_views.cards_with_items(evaluation, self.ruleset, card_views.CardContext(patient_ref))
            after_items = changes.items(evaluation)
            change = changes.diff(before_items, after_items)
            moved = {i["id"] for i in (*change["new"], *change["changed"])}
            worklist = [card for card, carried in pairs if {i["id"] for i in carried} & moved]
            views = [card_views.audit_view(card, carried) for card, carried in pairs]
            if change["withdrawn"]:
                card = _withdrawal_card(change["withdrawn"])
                worklist.append(card)
                # It stands for no item of this evaluation, so feedback on it counts for no rule.
                views.append({"uuid": card["uuid"], "summary": card["summary"], "indicator": card["indicator"],
                              "actions": ["withdrawn"], "items": [], "rules": [],
                              "suggestions": [s["uuid"] for s in card["suggestions"]]})
            built.update(items=after_items, change=change, worklist=worklist)
            return views

        result = evaluate_and_record(
            self.evaluator, self.audit, json.dumps(bundle, separators=(",", ":")).encode(), at.date(),
            AuditCaller(channel="intake", client=client.iss or None, jti=client.jti, hook_instance=post_id),
            make_cards=make_cards, received_at=at)
        evaluation = result.evaluation
        change = built["change"]
        triage = evaluation["triage"]
        changed = not changes.is_empty(change)
        notifications = []
        if changes.triage_rose(before_triage, triage):
            for subscriber in state.subscribers:
                nid = str(uuid.uuid4())
                payload = notification_bundle(nid, subscriber.key, patient=patient_ref,
                                              evaluation_id=result.record_id, before=before_triage, after=triage,
                                              change=change, at=at, worklist_url=self.worklist_url)
                notifications.append({"id": nid, "subscriber": subscriber.key,
                                      "payload": json.dumps(payload, separators=(",", ":")), "status": "pending",
                                      "attempts": 0, "next_attempt_at": at, "created_at": at})
        row = {"id": result.record_id, "post_id": post_id, "evaluated_at": at, "as_of": evaluation["asOf"],
               "record_version": (known.record_version if known else 0) + 1, "triage": triage,
               "previous_triage": before_triage, "changed": changed,
               "urgency_rank": changes.change_urgency(change, triage), "diff": json.dumps(change),
               "cards": json.dumps(built["worklist"] if changed else [])}
        plan = PatientPlan(patient_id, known.pk if known else None, known.record_version if known else 0,
                           [w for _o, w, _s in writes], triage, built["items"], row,
                           [c["uuid"] for c in built["worklist"]] if changed else [], notifications)
        return plan, evaluation

    @contextmanager
    def _patient_locks(self, client: str, patients: list[str]) -> Iterator[None]:
        stripes = sorted({zlib.crc32(f"{client}\n{p}".encode()) % _STRIPES for p in patients})
        with ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._locks[stripe])
            yield

    # -- reading --------------------------------------------------------------

    def read(self, client: Client, rtype: str, rid: str, version: int | None = None) -> dict[str, Any] | None:
        return self.store.resource(client.iss, rtype, rid, version)

    def worklist(self, client: Client | None, *, include_acknowledged: bool = False,
                 limit: int = 200) -> dict[str, Any]:
        """Patients whose suggestions changed, most urgent first, each with what changed and why
        (one client's patients, or every client's for the clinicians' page: ``client`` None)."""
        patients: dict[tuple[str, str], dict[str, Any]] = {}
        for item in self.store.worklist(client.iss if client else None, include_acknowledged=include_acknowledged,
                                        limit=limit):
            ref = f"Patient/{item['patient_id']}"
            entry = patients.setdefault((item["client"], ref), {
                "patient": ref, "triage": item["current_triage"],
                "urgency": changes.TRIAGE_ORDER[item["urgency_rank"]], "changes": []})
            if client is None:
                entry["client"] = item["client"]
            cards = []
            for card in item["cards"]:
                outcomes = item["feedback"].get(card["uuid"], [])
                cards.append({**card, "acknowledged": bool(outcomes), "feedback": outcomes})
            entry["changes"].append({
                "evaluation": item["id"], "at": _instant(item["evaluated_at"]), "asOf": item["as_of"],
                "recordVersion": item["record_version"],
                "triage": {"before": item["previous_triage"], "after": item["triage"]},
                "urgency": changes.TRIAGE_ORDER[item["urgency_rank"]],
                "new": item["diff"]["new"], "changed": item["diff"]["changed"],
                "withdrawn": item["diff"]["withdrawn"],
                "acknowledged": all(c["acknowledged"] for c in cards), "cards": cards,
                "notifications": item["notifications"]})
        for entry in patients.values():
            entry["changes"].sort(key=lambda c: -c["recordVersion"])  # newest first
        ordered = sorted(patients.values(), key=lambda p: (
            min(changes.triage_rank(p["urgency"]), changes.triage_rank(p["triage"])),
            [-_epoch(c["at"]) for c in p["changes"]][:1]))
        return {"patients": ordered,
                "feedback": "POST /cds-services/back-neuropathy-patient-view/feedback with a card uuid "
                            "(accepted or overridden) acknowledges it"}


def _withdrawal_card(withdrawn: list[dict[str, Any]]) -> dict[str, Any]:
    """A card for what is no longer suggested, so its withdrawal is acknowledged like the rest."""
    serious = any(i["urgency"] in ("emergency", "urgent") or i["rule"].startswith("red-flags/") for i in withdrawn)
    lines = ["**No longer suggested after the record changed:**"]
    lines += [f"- {card_views._md(i['title'])} ({i['urgency']}; rule `{i['rule']}`)" for i in withdrawn]
    lines += ["", "Check that the change to the record (a correction, an entered-in-error, a new result) "
                  "is right before acting on it."]
    return {"uuid": str(uuid.uuid4()),
            "summary": card_views._summary("No longer suggested: " + "; ".join(i["title"] for i in withdrawn)),
            "indicator": "warning" if serious else "info", "detail": "\n".join(lines),
            # Accepting it says "seen": CDS Hooks feedback accepts named suggestions.
            "suggestions": [{"label": "Noted: no longer suggested", "uuid": str(uuid.uuid4()), "isRecommended": True}],
            "source": {"label": "Spine CDS re-evaluation after new data",
                       "topic": {"system": WITHDRAWN_SYSTEM, "code": "withdrawn",
                                 "display": "Suggestion withdrawn"}},
            "overrideReasons": [{"system": card_views.OVERRIDE_SYSTEM, "code": c, "display": d}
                                for c, d in card_views.OVERRIDE_REASONS]}


def _status(resource: dict[str, Any]) -> str | None:
    status = resource.get("status")
    verification = resource.get("verificationStatus")
    if isinstance(verification, dict):
        codes = [c.get("code") for c in verification.get("coding") or [] if isinstance(c, dict)]
        if "entered-in-error" in codes:
            return "entered-in-error"
    return status[:32] if isinstance(status, str) else None


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


__all__ = ["Client", "IntakeService", "Outcome", "PostResult"]
