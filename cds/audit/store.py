"""The audit store: an AuditSink on SQLite or PostgreSQL, hash-chained.

Every append reads the chain head and writes the next link in one
transaction that holds the chain's write lock (``BEGIN IMMEDIATE`` on
SQLite, ``SELECT ... FOR UPDATE`` of the head row on PostgreSQL), so seq
numbers are gapless and every record chains to its predecessor across
threads and processes. Evaluations and feedback appended at the same time
by threads of one process are written as a group, several records in one
transaction with one commit (cds/audit/group.py): the database lock still
orders the groups of different processes. A method returns only after the
commit of the transaction holding its record; any failure to write raises
StoreUnavailable (fail closed) for every caller whose record was in that
transaction, and says so in the log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Table, and_, delete, exists, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from cds.audit.canonical import canonical_json, chain_hash, sha256_hex
from cds.audit.chain import ChainRow, ChainWalker, Problem, VerifyReport
from cds.audit.database import SQLITE_BEGIN, make_engine
from cds.audit.group import GroupCommit, Outcome
from cds.audit.migrate import current_revision, head_revision, upgrade
from cds.audit.models import (
    MAIN_CHAIN,
    Action,
    AuditRecord,
    Base,
    Card,
    CardRule,
    ChainHead,
    Evaluation,
    Feedback,
    Firing,
    StoredInput,
)
from cds.audit.records import evaluation_content, feedback_content, index_rows, iso, parse_iso, raw_text
from cds.audit.settings import STORE_INPUT_MODES, AuditConfigError, AuditSettings
from cds.errors import CdsError, NotFound, StoreUnavailable
from cds.evaluation.ports import EvaluationRecord, FeedbackRecord

log = structlog.get_logger("cds.audit")

_TABLES: dict[str, Table] = {t.name: t for t in Base.metadata.sorted_tables}
MAX_PAGE = 500
_BATCH = 500
#: records per transaction at most: bounds the lock hold time and the work one failure refuses
GROUP_LIMIT = 64


@dataclass(frozen=True)
class _Append:
    """One record to chain. ``build`` makes its content once its seq is known; ``after`` writes
    what goes beside it. An ``exclusive`` append (retention, prune) writes in ``build``: it gets a
    transaction of its own, and its failure rolls that transaction back."""

    kind: str
    record_id: str
    build: Callable[[Connection, int, datetime], dict[str, Any]]
    after: Callable[[Connection, dict[str, Any]], None] | None = None
    exclusive: bool = False


@dataclass(frozen=True)
class EvaluationPage:
    items: list[dict[str, Any]]
    next_after: int | None


class AuditStore:
    """Implements :class:`cds.evaluation.ports.AuditSink`; share one per process."""

    def __init__(self, engine: Engine, *, store_input: str = "facts", chain: str = MAIN_CHAIN) -> None:
        if store_input not in STORE_INPUT_MODES:
            raise AuditConfigError(f"store_input must be one of {', '.join(STORE_INPUT_MODES)}")
        self.engine = engine
        self.store_input = store_input
        self.chain = chain
        self._group: GroupCommit[_Append] = GroupCommit(self._write_group, limit=GROUP_LIMIT)

    @classmethod
    def open(cls, url: str, *, schema: str | None = None, store_input: str = "facts", migrate: bool = True,
             **engine_kwargs: Any) -> AuditStore:
        """Connect, migrate (or check the schema is current), and return the store."""
        engine = make_engine(url, schema=schema, **engine_kwargs)
        try:
            if migrate:
                upgrade(engine)
            else:
                current, head = current_revision(engine), head_revision()
                if current != head:
                    raise AuditConfigError(f"audit schema is at revision {current}, this version needs {head}: "
                                           "run `cds db upgrade`")
        except SQLAlchemyError as exc:
            engine.dispose()
            log.error("audit_store_unreachable", backend=engine.dialect.name, error=_brief(exc))
            raise StoreUnavailable(f"audit store unreachable: {_brief(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, store_input=store_input)

    @classmethod
    def from_settings(cls, settings: AuditSettings) -> AuditStore:
        return cls.open(settings.database_url, schema=settings.schema, store_input=settings.store_input,
                        migrate=settings.migrate)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """Readiness: the store answers (used by /readyz)."""
        try:
            self.head()
        except StoreUnavailable:
            return False
        return True

    # -- writing --------------------------------------------------------------

    def record_evaluation(self, record: EvaluationRecord, raw_input: Any = None) -> str:
        """Commit one evaluation; return its id. ``raw_input`` (bytes or parsed JSON) is kept
        only when the store keeps ``full`` input."""
        facts_json = canonical_json(list(record.facts))
        raw = raw_text(raw_input) if self.store_input == "full" else None
        stored = "full" if raw is not None else ("hash" if self.store_input == "hash" else "facts")
        record_id = str(uuid.uuid4())

        def build(conn: Connection, seq: int, recorded_at: datetime) -> dict[str, Any]:
            return evaluation_content(record, record_id=record_id, seq=seq, recorded_at=recorded_at,
                                      stored=stored, facts_json=facts_json, raw=raw)

        def after(conn: Connection, content: dict[str, Any]) -> None:
            if stored != "hash":
                conn.execute(insert(StoredInput), {"evaluation_id": record_id, "raw": raw,
                                                   "facts": facts_json, "purged_at": None})

        self._deliver("evaluation", self._group.submit(_Append("evaluation", record_id, build, after)))
        return record_id

    def record_feedback(self, feedback: FeedbackRecord) -> str:
        """Commit feedback on a recorded card; NotFound for a card never answered."""
        record_id = str(uuid.uuid4())

        def build(conn: Connection, seq: int, recorded_at: datetime) -> dict[str, Any]:
            evaluation_id = conn.execute(select(Card.evaluation_id).where(Card.uuid == feedback.card)).scalar()
            if evaluation_id is None:
                raise NotFound(f"unknown card {feedback.card[:64]}")
            return feedback_content(feedback, record_id=record_id, seq=seq, recorded_at=recorded_at,
                                    evaluation_id=evaluation_id)

        self._deliver("feedback", self._group.submit(_Append("feedback", record_id, build)))
        return record_id

    def card_exists(self, card_uuid: str) -> bool:
        return self._read(lambda c: c.execute(select(exists().where(Card.uuid == card_uuid))).scalar()) is True

    def _append(self, kind: str, record_id: str,
                build: Callable[[Connection, int, datetime], dict[str, Any]]) -> int:
        """An exclusive append (retention, prune): its own transaction, never grouped."""
        return self._deliver(kind, self._write_group([_Append(kind, record_id, build, exclusive=True)])[0])

    def _deliver(self, kind: str, outcome: Outcome) -> int:
        """The caller's side of an append: its seq once committed, else its error (fail closed)."""
        if not isinstance(outcome, BaseException):
            return outcome
        if isinstance(outcome, CdsError):
            raise outcome
        # ValueError: content that is not JSON (NaN, a non-serializable object); a database
        # error refuses the whole group. Refusing to answer beats answering without a record.
        log.error("audit_write_failed", kind=kind, backend=self.backend, error=_brief(outcome),
                  consequence="the call is refused (fail closed)")
        raise StoreUnavailable("the audit record could not be written, so the result is not "
                               "released; try again later") from outcome

    def _write_group(self, jobs: list[_Append]) -> list[Outcome]:
        """Chain ``jobs`` in order in one transaction. A job whose content cannot be built fails
        alone (its caller's error); a database failure fails every job, and nothing is written."""
        outcomes: list[Outcome] = [0] * len(jobs)
        try:
            with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
                head = conn.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.chain == self.chain)
                                    .with_for_update()).one()
                seq, prev_hash = int(head.seq), str(head.hash)
                for i, job in enumerate(jobs):
                    recorded_at = datetime.now(UTC)
                    try:
                        content = job.build(conn, seq + 1, recorded_at)
                        text = canonical_json(content)
                        rows = [(table, r) for table, r in index_rows(content) if r]
                    except (CdsError, ValueError, TypeError) as exc:
                        if job.exclusive:
                            raise
                        # Built before anything of it was written: the rest of the group goes on.
                        outcomes[i] = exc
                        continue
                    seq += 1
                    digest = chain_hash(prev_hash, text)
                    conn.execute(insert(AuditRecord), {"seq": seq, "record_id": job.record_id, "kind": job.kind,
                                                       "recorded_at": recorded_at, "prev_hash": prev_hash,
                                                       "hash": digest, "content": text})
                    for table, r in rows:
                        conn.execute(insert(_TABLES[table]), r)
                    if job.after is not None:
                        job.after(conn, content)
                    prev_hash = digest
                    outcomes[i] = seq
                if seq != head.seq:
                    conn.execute(update(ChainHead).where(ChainHead.chain == self.chain)
                                 .values(seq=seq, hash=prev_hash))
        except Exception as exc:  # noqa: BLE001 - whatever broke the transaction, none of it committed
            if len(jobs) > 1:
                log.error("audit_group_failed", records=len(jobs), backend=self.backend, error=_brief(exc))
            return [o if isinstance(o, BaseException) else exc for o in outcomes]
        return outcomes

    # -- reading --------------------------------------------------------------

    def _read(self, work: Callable[[Connection], Any]) -> Any:
        try:
            with self.engine.connect() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            log.error("audit_read_failed", backend=self.backend, error=_brief(exc))
            raise StoreUnavailable("the audit store cannot be read; try again later") from exc

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last link: publish it elsewhere to make truncation evident."""
        row = self._read(lambda c: c.execute(select(ChainHead.seq, ChainHead.hash)
                                             .where(ChainHead.chain == self.chain)).one())
        return int(row.seq), str(row.hash)

    def get_evaluation(self, evaluation_id: str, *, include_raw: bool = False) -> dict[str, Any]:
        """The whole trace of one evaluation, with its stored input and feedback."""
        def work(conn: Connection) -> dict[str, Any]:
            row = conn.execute(select(AuditRecord.__table__).join(Evaluation, Evaluation.seq == AuditRecord.seq)
                               .where(Evaluation.id == evaluation_id)).first()
            if row is None:
                raise NotFound(f"no evaluation {evaluation_id[:64]}")
            trace = json.loads(row.content)
            trace["chain"] = {"seq": row.seq, "hash": row.hash, "prevHash": row.prev_hash}
            stored = conn.execute(select(StoredInput.__table__)
                                  .where(StoredInput.evaluation_id == evaluation_id)).first()
            if stored is not None:
                trace["input"]["facts"] = json.loads(stored.facts) if stored.facts else None
                if include_raw and stored.raw is not None:
                    trace["input"]["raw"] = stored.raw
                if stored.purged_at is not None:
                    trace["input"]["purgedAt"] = iso(stored.purged_at)
            cards = [c["uuid"] for c in trace.get("cards", []) if c.get("uuid")]
            feedback: list[str] = []
            if cards:
                feedback = list(conn.execute(select(AuditRecord.content)
                                             .join(Feedback, Feedback.seq == AuditRecord.seq)
                                             .where(Feedback.card.in_(cards)).order_by(AuditRecord.seq)).scalars())
            trace["feedback"] = [json.loads(f) for f in feedback]
            return trace
        result: dict[str, Any] = self._read(work)
        return result

    def list_evaluations(self, *, patient: str | None = None, rule: str | None = None,
                         action: str | None = None, triage: str | None = None, client: str | None = None,
                         user: str | None = None, outcome: str | None = None, since: datetime | None = None,
                         until: datetime | None = None, after: int | None = None,
                         limit: int = 50) -> EvaluationPage:
        """Summaries in record order, filtered; page on with ``after=next_after``."""
        limit = max(1, min(limit, MAX_PAGE))
        conditions = []
        for column, value in ((Evaluation.patient, patient), (Evaluation.triage, triage),
                              (Evaluation.client, client), (Evaluation.user_ref, user),
                              (Evaluation.outcome, outcome)):
            if value is not None:
                conditions.append(column == value)
        if since is not None:
            conditions.append(Evaluation.received_at >= since)
        if until is not None:
            conditions.append(Evaluation.received_at < until)
        if after is not None:
            conditions.append(Evaluation.seq > after)
        if rule is not None:
            conditions.append(exists().where(and_(Firing.evaluation_id == Evaluation.id, Firing.rule == rule)))
        if action is not None:
            conditions.append(exists().where(and_(Action.evaluation_id == Evaluation.id, Action.action == action)))

        def work(conn: Connection) -> EvaluationPage:
            rows = conn.execute(select(Evaluation.__table__).where(*conditions).order_by(Evaluation.seq)
                                .limit(limit + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            actions: dict[str, list[dict[str, Any]]] = {}
            if rows:
                for a in conn.execute(select(Action.__table__).where(Action.evaluation_id.in_([r.id for r in rows]))
                                      .order_by(Action.evaluation_id, Action.ordinal)):
                    actions.setdefault(a.evaluation_id, []).append(
                        {"kind": a.kind, "action": a.action, "urgency": a.urgency, "rule": a.rule})
            items = [{"id": r.id, "seq": r.seq, "receivedAt": iso(r.received_at), "channel": r.channel,
                      "client": r.client, "user": r.user_ref, "hook": r.hook, "hookInstance": r.hook_instance,
                      "patient": r.patient, "triage": r.triage, "rulesetVersion": r.ruleset_version,
                      "outcome": r.outcome, "actions": actions.get(r.id, [])} for r in rows]
            return EvaluationPage(items, rows[-1].seq if more else None)
        page: EvaluationPage = self._read(work)
        return page

    def rule_stats(self, rule: str, *, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """Firings of a rule, and acceptance / override of the cards it produced, over a period."""
        period = []
        if since is not None:
            period.append(Evaluation.received_at >= since)
        if until is not None:
            period.append(Evaluation.received_at < until)

        def work(conn: Connection) -> dict[str, Any]:
            firings, evaluations = conn.execute(
                select(func.count(), func.count(func.distinct(Firing.evaluation_id)))
                .select_from(Firing).join(Evaluation, Evaluation.id == Firing.evaluation_id)
                .where(Firing.rule == rule, *period)).one()
            cards = conn.execute(select(func.count(func.distinct(CardRule.card))).select_from(CardRule)
                                 .join(Card, Card.uuid == CardRule.card)
                                 .join(Evaluation, Evaluation.id == Card.evaluation_id)
                                 .where(CardRule.rule == rule, *period)).scalar() or 0
            outcomes = {outcome: n for outcome, n in conn.execute(
                select(Feedback.outcome, func.count(func.distinct(Feedback.card))).select_from(Feedback)
                .join(CardRule, CardRule.card == Feedback.card).join(Card, Card.uuid == Feedback.card)
                .join(Evaluation, Evaluation.id == Card.evaluation_id)
                .where(CardRule.rule == rule, *period).group_by(Feedback.outcome))}
            accepted, overridden = outcomes.get("accepted", 0), outcomes.get("overridden", 0)
            return {"rule": rule, "since": iso(since) if since else None, "until": iso(until) if until else None,
                    "firings": firings, "evaluations": evaluations, "cards": cards,
                    "accepted": accepted, "overridden": overridden,
                    "acceptanceRate": round(accepted / cards, 4) if cards else None,
                    "overrideRate": round(overridden / cards, 4) if cards else None}
        stats: dict[str, Any] = self._read(work)
        return stats

    def iter_evaluations(self, *, since: datetime | None = None, until: datetime | None = None,
                         with_input: bool = False) -> Iterator[dict[str, Any]]:
        """Every recorded evaluation's content in seq order (streamed in batches)."""
        after = 0
        while True:
            def work(conn: Connection, after: int = after) -> list[Any]:
                query = select(AuditRecord.seq, AuditRecord.content, StoredInput.raw, StoredInput.facts) \
                    .join(Evaluation, Evaluation.seq == AuditRecord.seq) \
                    .outerjoin(StoredInput, StoredInput.evaluation_id == Evaluation.id) \
                    .where(AuditRecord.seq > after)
                if since is not None:
                    query = query.where(Evaluation.received_at >= since)
                if until is not None:
                    query = query.where(Evaluation.received_at < until)
                return list(conn.execute(query.order_by(AuditRecord.seq).limit(_BATCH)).all())
            rows = self._read(work)
            for row in rows:
                content = json.loads(row.content)
                if with_input:
                    content["input"]["facts"] = json.loads(row.facts) if row.facts else None
                    content["input"]["raw"] = row.raw
                yield content
            if len(rows) < _BATCH:
                return
            after = rows[-1].seq

    # -- verification and retention ------------------------------------------

    def verify(self) -> VerifyReport:
        """Walk the whole chain; the report names the first bad record, if any."""
        def work(conn: Connection) -> VerifyReport:
            anchor_text = conn.execute(select(AuditRecord.content).where(AuditRecord.kind == "prune")
                                       .order_by(AuditRecord.seq.desc()).limit(1)).scalar()
            cutoffs = [parse_iso(json.loads(t)["purgedInputsBefore"]) for t in conn.execute(
                select(AuditRecord.content).where(AuditRecord.kind == "retention")).scalars()]
            purge_cutoff = max(cutoffs) if cutoffs else None
            indexes = _IndexSnapshot()
            walker = ChainWalker(json.loads(anchor_text) if anchor_text else None,
                                 check_content=lambda row, content: indexes.check(content, purge_cutoff))
            after = 0
            while True:
                rows = conn.execute(select(AuditRecord.__table__).where(AuditRecord.seq > after)
                                    .order_by(AuditRecord.seq).limit(_BATCH)).all()
                indexes.load(conn, rows)
                for r in rows:
                    if not walker.feed(ChainRow(r.seq, r.record_id, r.kind, r.prev_hash, r.hash, r.content)):
                        break
                if walker.report.problem is not None or len(rows) < _BATCH:
                    break
                after = rows[-1].seq
            head = conn.execute(select(ChainHead.seq, ChainHead.hash).where(ChainHead.chain == self.chain)).one()
            report = walker.finish(int(head.seq), str(head.hash))
            if report.ok:
                # Index rows with no chained record behind them (forged into a filter's results).
                for model, kind in ((Evaluation, "evaluation"), (Feedback, "feedback")):
                    orphans = conn.execute(select(func.count()).select_from(model).outerjoin(
                        AuditRecord, and_(AuditRecord.seq == model.seq, AuditRecord.kind == kind,
                                          AuditRecord.record_id == model.id))
                        .where(AuditRecord.seq.is_(None))).scalar()
                    if orphans:
                        report.problem = Problem(report.head_seq, None, f"{orphans} {model.__tablename__} rows "
                                                                        "match no chained record (index forged)")
                        break
            return report
        report: VerifyReport = self._read(work)
        return report

    def purge_inputs(self, before: datetime) -> int:
        """Remove stored inputs (PHI) of evaluations received before ``before``; the chain stays
        whole, and a ``retention`` record says what was purged."""
        count = 0

        def build(conn: Connection, seq: int, recorded_at: datetime) -> dict[str, Any]:
            nonlocal count
            targets = select(Evaluation.id).where(Evaluation.received_at < before).scalar_subquery()
            count = conn.execute(update(StoredInput).where(StoredInput.evaluation_id.in_(targets),
                                                           StoredInput.purged_at.is_(None))
                                 .values(raw=None, facts=None, purged_at=recorded_at)).rowcount
            return {"kind": "retention", "id": record_id, "seq": seq, "recordedAt": iso(recorded_at),
                    "purgedInputsBefore": iso(before), "count": count}

        record_id = str(uuid.uuid4())
        self._append("retention", record_id, build)
        return count

    def prune(self, before: datetime) -> int:
        """Delete whole records made before ``before`` (a prefix of the chain). A ``prune``
        record keeps the hash the first remaining record chains to, so verify still passes."""
        pruned = 0

        def build(conn: Connection, seq: int, recorded_at: datetime) -> dict[str, Any]:
            nonlocal pruned
            bounds = conn.execute(select(func.min(AuditRecord.seq), func.max(AuditRecord.seq))
                                  .where(AuditRecord.recorded_at < before)).one()
            first, last = bounds
            if last is None:
                raise NotFound("no records before that date")
            last_hash = conn.execute(select(AuditRecord.hash).where(AuditRecord.seq == last)).scalar()
            ids = select(Evaluation.id).where(Evaluation.seq <= last).scalar_subquery()
            cards = select(Card.uuid).where(Card.evaluation_id.in_(ids)).scalar_subquery()
            conn.execute(delete(CardRule).where(CardRule.card.in_(cards)))
            for table in (Card, Firing, Action, StoredInput):
                conn.execute(delete(table).where(table.evaluation_id.in_(ids)))  # type: ignore[attr-defined]
            conn.execute(delete(Evaluation).where(Evaluation.seq <= last))
            conn.execute(delete(Feedback).where(Feedback.seq <= last))
            pruned = conn.execute(delete(AuditRecord).where(AuditRecord.seq <= last)).rowcount
            return {"kind": "prune", "id": record_id, "seq": seq, "recordedAt": iso(recorded_at),
                    "before": iso(before), "prunedFrom": first, "prunedThrough": last, "lastPrunedHash": last_hash,
                    "count": pruned}

        record_id = str(uuid.uuid4())
        self._append("prune", record_id, build)
        return pruned


class _IndexSnapshot:
    """The index rows and stored inputs of one batch of records, fetched in a few queries."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[Any]]] = {}
        self.inputs: dict[str, Any] = {}

    def load(self, conn: Connection, records: Any) -> None:
        contents = [json.loads(r.content) for r in records if r.kind in ("evaluation", "feedback")]
        evaluations = [c["id"] for c in contents if c.get("kind") == "evaluation"]
        feedback = [c["id"] for c in contents if c.get("kind") == "feedback"]
        cards = [str(card["uuid"]) for c in contents if c.get("kind") == "evaluation"
                 for card in c.get("cards", []) if card.get("uuid")]
        self.rows = {name: {} for name in _TABLES}
        queries = [("audit_evaluation", "id", evaluations), ("audit_firing", "evaluation_id", evaluations),
                   ("audit_action", "evaluation_id", evaluations), ("audit_card", "evaluation_id", evaluations),
                   ("audit_card_rule", "card", cards), ("audit_feedback", "id", feedback)]
        for name, key, ids in queries:
            if not ids:
                continue
            table = _TABLES[name]
            for row in conn.execute(select(table).where(table.c[key].in_(ids))).mappings():
                self.rows[name].setdefault(str(row[key]), []).append(row)
        self.inputs = {}
        if evaluations:
            for stored in conn.execute(select(StoredInput.__table__)
                                       .where(StoredInput.evaluation_id.in_(evaluations))):
                self.inputs[stored.evaluation_id] = stored

    def check(self, content: dict[str, Any], purge_cutoff: datetime | None) -> str | None:
        for table_name, expected in index_rows(content):
            found = self.rows.get(table_name, {})
            if table_name == "audit_card_rule":
                actual = [row for card in {r["card"] for r in expected} for row in found.get(card, [])]
            else:
                actual = list(found.get(content["id"], []))
            if _normalized(actual) != _normalized(expected):
                return f"{table_name} rows differ from the chained content (index altered)"
        if content["kind"] == "evaluation":
            return self._check_input(content, purge_cutoff)
        return None

    def _check_input(self, content: dict[str, Any], purge_cutoff: datetime | None) -> str | None:
        info = content["input"]
        stored = self.inputs.get(content["id"])
        if info["stored"] == "hash":
            return None if stored is None else "stored input present where the record says only digests were kept"
        if stored is None:
            return "stored input deleted"
        if stored.purged_at is not None:
            if purge_cutoff is None or parse_iso(content["receivedAt"]) >= purge_cutoff:
                return "stored input removed without a retention record covering it"
            return None
        if stored.facts is None or sha256_hex(stored.facts) != info["factsSha256"]:
            return "stored input facts altered"
        if info["stored"] == "full" and (stored.raw is None or sha256_hex(stored.raw) != info["rawSha256"]):
            return "stored raw input altered"
        return None


def _normalized(rows: Any) -> list[tuple[tuple[str, Any], ...]]:
    out = []
    for row in rows:
        items = []
        for key, value in dict(row).items():
            if isinstance(value, datetime):
                value = iso(value)
            items.append((key, value))
        out.append(tuple(sorted(items)))
    return sorted(out, key=repr)


def _brief(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
