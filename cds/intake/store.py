"""The per-patient record in the database: reads for one post, and its one commit.

Every read a post needs is keyed by the patient (or by the posted
resource's own id, or an identifier), so its cost does not depend on how
many other patients are on record. The commit is one transaction that
moves each touched patient's ``record_version`` with a compare-and-swap:
if another process changed the record since it was read, nothing is
written and the service starts the post again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, and_, delete, exists, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cds.audit.database import SQLITE_BEGIN
from cds.audit.models import Feedback
from cds.errors import CdsError, StoreUnavailable
from cds.intake.models import (
    Evaluation,
    Identifier,
    Notification,
    Patient,
    Resource,
    ResourceVersion,
    WorklistCard,
)

log = structlog.get_logger("cds.intake")


class RecordChanged(Exception):
    """Another writer moved the record between our read and our commit: read again."""


@dataclass
class CurrentResource:
    rtype: str
    rid: str
    patient_pk: int
    version: int
    sha256: str
    content: str
    status: str | None


@dataclass
class PatientState:
    pk: int
    record_version: int
    triage: str
    last_items: dict[str, Any]


@dataclass
class State:
    """What one post needs to know, read in one short transaction."""

    patients: dict[str, PatientState] = field(default_factory=dict)
    record: dict[int, dict[tuple[str, str], CurrentResource]] = field(default_factory=dict)  # by patient pk
    by_ref: dict[tuple[str, str], CurrentResource] = field(default_factory=dict)
    matches: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # (type, param, value) -> ids
    subscribers: list[Any] = field(default_factory=list)


@dataclass
class ResourceWrite:
    rtype: str
    rid: str
    version: int
    sha256: str
    content: str
    status: str | None
    identifiers: list[tuple[str, str]]


@dataclass
class PatientPlan:
    """Everything one post changes for one patient, written in the one commit."""

    patient_id: str
    pk: int | None                      # None: a new patient
    expected_version: int               # 0 for a new patient
    writes: list[ResourceWrite]
    triage: str
    last_items: dict[str, Any]
    evaluation: dict[str, Any]          # intake_evaluation row (without patient_pk)
    worklist_cards: list[str]
    notifications: list[dict[str, Any]]


class RecordStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self, client: str, patient_ids: Iterable[str], refs: Iterable[tuple[str, str]],
             conditionals: Iterable[tuple[str, str, str]], subscribers: Any = None) -> State:
        state = State()
        patient_ids, refs, conditionals = sorted(set(patient_ids)), sorted(set(refs)), sorted(set(conditionals))
        try:
            with self.engine.connect() as conn:
                if patient_ids:
                    for row in conn.execute(select(Patient.__table__).where(
                            Patient.client == client, Patient.patient_id.in_(patient_ids))):
                        state.patients[row.patient_id] = PatientState(row.id, row.record_version, row.triage,
                                                                      json.loads(row.last_items))
                pks = [p.pk for p in state.patients.values()]
                if pks:
                    for r in conn.execute(select(Resource.__table__).where(Resource.patient_pk.in_(pks))):
                        current = _current(r)
                        state.record.setdefault(r.patient_pk, {})[(r.rtype, r.rid)] = current
                        state.by_ref[(r.rtype, r.rid)] = current
                missing = [ref for ref in refs if ref not in state.by_ref]
                for chunk in _chunks(missing, 200):
                    for r in conn.execute(select(Resource.__table__).where(
                            Resource.client == client, tuple_(Resource.rtype, Resource.rid).in_(chunk))):
                        state.by_ref[(r.rtype, r.rid)] = _current(r)
                for rtype, param, value in conditionals:
                    if param == "_id":
                        ids = [value] if (rtype, value) in state.by_ref or conn.execute(
                            select(Resource.rid).where(Resource.client == client, Resource.rtype == rtype,
                                                       Resource.rid == value)).first() else []
                    else:
                        system, _, code = value.partition("|")
                        ids = list(conn.execute(select(Identifier.rid).where(
                            Identifier.client == client, Identifier.rtype == rtype, Identifier.system == system,
                            Identifier.value == code)).scalars())
                    state.matches[(rtype, param, value)] = ids
                if subscribers is not None:
                    state.subscribers = subscribers(conn, client)
        except SQLAlchemyError as exc:
            log.error("intake_read_failed", error=type(exc).__name__)
            raise StoreUnavailable("the patient record cannot be read; try again later") from exc
        return state

    def commit(self, client: str, plans: list[PatientPlan], post_id: str, at: datetime) -> None:
        """Write every plan or nothing. RecordChanged when another writer got there first."""
        try:
            with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
                for plan in plans:
                    self._write(conn, client, plan, post_id, at)
        except RecordChanged:
            raise
        except IntegrityError as exc:
            # Two creates of one patient or resource id raced: the loser reads again.
            raise RecordChanged() from exc
        except CdsError:
            raise
        except SQLAlchemyError as exc:
            log.error("intake_write_failed", error=type(exc).__name__,
                      consequence="the post is refused; its evaluation stays in the audit trail")
            raise StoreUnavailable("the patient record could not be written; nothing of this post was "
                                   "applied; try again") from exc

    def _write(self, conn: Connection, client: str, plan: PatientPlan, post_id: str, at: datetime) -> None:
        items = json.dumps(plan.last_items, sort_keys=True)
        last_evaluation = plan.evaluation.get("id")
        if plan.pk is None:
            inserted = conn.execute(insert(Patient).values(
                client=client, patient_id=plan.patient_id, record_version=1, triage=plan.triage,
                last_evaluation=last_evaluation, last_items=items, updated_at=at)).inserted_primary_key
            assert inserted is not None
            pk = inserted[0]
        else:
            pk = plan.pk
            moved = conn.execute(update(Patient).where(Patient.id == pk,
                                                       Patient.record_version == plan.expected_version)
                                 .values(record_version=plan.expected_version + 1, triage=plan.triage,
                                         last_evaluation=last_evaluation, last_items=items, updated_at=at)).rowcount
            if moved != 1:
                raise RecordChanged()
        for w in plan.writes:
            row = {"status": w.status, "sha256": w.sha256, "content": w.content, "version": w.version}
            if w.version == 1:
                conn.execute(insert(Resource), {"client": client, "rtype": w.rtype, "rid": w.rid, "patient_pk": pk,
                                                "updated_at": at, **row})
            else:
                moved = conn.execute(update(Resource).where(
                    Resource.client == client, Resource.rtype == w.rtype, Resource.rid == w.rid,
                    Resource.version == w.version - 1).values(updated_at=at, **row)).rowcount
                if moved != 1:
                    raise RecordChanged()
            conn.execute(insert(ResourceVersion), {"client": client, "rtype": w.rtype, "rid": w.rid,
                                                   "patient_pk": pk, "recorded_at": at, "post_id": post_id, **row})
            conn.execute(delete(Identifier).where(Identifier.client == client, Identifier.rtype == w.rtype,
                                                  Identifier.rid == w.rid))
            if w.identifiers and w.status != "entered-in-error":
                conn.execute(insert(Identifier), [{"client": client, "rtype": w.rtype, "system": s, "value": v,
                                                   "rid": w.rid} for s, v in w.identifiers])
        if plan.evaluation:
            conn.execute(insert(Evaluation), {**plan.evaluation, "patient_pk": pk, "client": client})
            if plan.worklist_cards:
                conn.execute(insert(WorklistCard), [{"evaluation_id": plan.evaluation["id"], "card": c}
                                                    for c in plan.worklist_cards])
            if plan.notifications:
                conn.execute(insert(Notification), [{**n, "evaluation_id": plan.evaluation["id"]}
                                                    for n in plan.notifications])

    # -- reading for the API ---------------------------------------------------

    def resource(self, client: str, rtype: str, rid: str, version: int | None = None) -> dict[str, Any] | None:
        table = ResourceVersion if version is not None else Resource
        query = select(table.content).where(table.client == client, table.rtype == rtype, table.rid == rid)
        if version is not None:
            query = query.where(ResourceVersion.version == version)
        try:
            with self.engine.connect() as conn:
                text = conn.execute(query).scalar()
        except SQLAlchemyError as exc:
            raise StoreUnavailable("the patient record cannot be read; try again later") from exc
        return json.loads(text) if text is not None else None

    def worklist(self, client: str | None, *, include_acknowledged: bool = False,
                 limit: int = 200) -> list[dict[str, Any]]:
        """Changed evaluations, most urgent first, with each card's feedback (from the audit trail)."""
        open_card = exists().where(and_(WorklistCard.evaluation_id == Evaluation.id,
                                        ~exists().where(Feedback.card == WorklistCard.card)))
        query = (select(Evaluation.__table__, Patient.patient_id, Patient.triage.label("current_triage"))
                 .join(Patient, Patient.id == Evaluation.patient_pk)
                 .where(Evaluation.changed.is_(True))
                 .order_by(Evaluation.urgency_rank, Evaluation.evaluated_at.desc()).limit(limit))
        if client is not None:
            query = query.where(Evaluation.client == client)
        if not include_acknowledged:
            query = query.where(open_card)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
                cards = [c["uuid"] for r in rows for c in json.loads(r.cards)]
                feedback: dict[str, list[str]] = {}
                for chunk in _chunks(cards, 500):
                    for f in conn.execute(select(Feedback.card, Feedback.outcome).where(Feedback.card.in_(chunk))
                                          .order_by(Feedback.seq)):
                        feedback.setdefault(f.card, []).append(f.outcome)
                notes: dict[str, list[dict[str, Any]]] = {}
                ids = [r.id for r in rows]
                for chunk in _chunks(ids, 500):
                    for n in conn.execute(select(Notification.evaluation_id, Notification.subscriber,
                                                 Notification.status, Notification.attempts)
                                          .where(Notification.evaluation_id.in_(chunk))):
                        notes.setdefault(n.evaluation_id, []).append(
                            {"subscriber": n.subscriber, "status": n.status, "attempts": n.attempts})
        except SQLAlchemyError as exc:
            raise StoreUnavailable("the worklist cannot be read; try again later") from exc
        out = []
        for r in rows:
            item = dict(r._mapping)
            item["diff"] = json.loads(r.diff)
            item["cards"] = json.loads(r.cards)
            item["feedback"] = {c["uuid"]: feedback.get(c["uuid"], []) for c in item["cards"]}
            item["notifications"] = notes.get(r.id, [])
            out.append(item)
        return out


def _current(r: Any) -> CurrentResource:
    return CurrentResource(r.rtype, r.rid, r.patient_pk, r.version, r.sha256, r.content, r.status)


def _chunks(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
