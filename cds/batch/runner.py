"""Screen many patients: every core locally, or a Dask cluster.

Each patient is evaluated and recorded in the audit trail (channel
``batch``) by a worker process; the parent writes one NDJSON line per
patient as results arrive, in whatever order they finish. A run can be
interrupted and started again with the same command: patients already in
the results file are skipped, and a patient whose audit record was
committed but whose line was not written (the interruption fell in
between) is answered from its existing record rather than recorded twice.

The run's identity (input, evaluation date, ruleset) sits beside the
results in ``<out>.run.json``; resuming with a different date or ruleset is
refused, since the results would mix two screenings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from cds.batch.sources import Item, Source
from cds.errors import CdsError, InputError

#: the largest key kept whole in the audit's hook_instance column (128)
_MAX_KEY = 90


@dataclass(frozen=True)
class Settings:
    """What each worker needs to evaluate and record."""

    as_of: date
    ruleset_path: str | None
    #: audit settings (cds.audit.AuditSettings) or None for no audit
    audit: Any
    run_id: str


@dataclass
class Summary:
    patients: int = 0
    skipped: int = 0
    errors: int = 0
    by_triage: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    problems: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "skipped_already_done": self.skipped, "errors": self.errors,
                "input_problems": self.problems, "by_triage": dict(self.by_triage.most_common()),
                "top_actions": dict(self.actions.most_common(10)), "seconds": round(self.seconds, 2),
                "per_second": round(self.patients / self.seconds, 1) if self.seconds else None}


def instance_id(run_id: str, key: str) -> str:
    """The audit record's hook_instance for one patient of one run."""
    if len(key) > _MAX_KEY:
        key = hashlib.sha256(key.encode()).hexdigest()
    return f"batch:{run_id}:{key}"


# -- worker side ------------------------------------------------------------

_worker: dict[str, Any] = {}


def _setup(settings: Settings) -> dict[str, Any]:
    """Per process, once: the evaluator and the audit store."""
    cached = _worker.get(settings.run_id)
    if cached is None:
        from cds.evaluation import Evaluator
        from cds.knowledge import load_ruleset

        store = None
        if settings.audit is not None:
            from cds.audit import AuditStore

            store = AuditStore.from_settings(settings.audit)
        cached = _worker[settings.run_id] = {"evaluator": Evaluator(load_ruleset(settings.ruleset_path)),
                                             "store": store}
    return cached


def evaluate_item(settings: Settings, item: Item, recorded: str | None = None) -> dict[str, Any]:
    """One result line. ``recorded``: the audit record id when this patient
    was already recorded by an interrupted run (then it is not recorded again)."""
    from cds.audit.recording import Caller, evaluate_and_record
    from cds.fhir import parse_json

    state = _setup(settings)
    evaluator, store = state["evaluator"], state["store"]
    started = time.perf_counter()
    record_id: str | None
    try:
        if store is not None and recorded is None:
            caller = Caller(channel="batch", hook_instance=instance_id(settings.run_id, item.key))
            result = evaluate_and_record(evaluator, store, item.body, settings.as_of, caller)
            evaluation, record_id = result.evaluation, result.record_id
        else:
            evaluation, record_id = evaluator.evaluate(parse_json(item.body), settings.as_of), recorded
    except CdsError as exc:
        return {"key": item.key, "status": "error", "error": {"status": exc.status, "message": exc.diagnostics},
                "ms": round((time.perf_counter() - started) * 1000, 2)}
    return {"key": item.key, "status": "ok", "patient": evaluation["patient"], "triage": evaluation["triage"],
            "auditRecord": record_id, "ms": round((time.perf_counter() - started) * 1000, 2),
            "evaluation": evaluation}


def _evaluate_many(settings: Settings, work: list[tuple[Item, str | None]]) -> list[dict[str, Any]]:
    return [evaluate_item(settings, item, recorded) for item, recorded in work]


# -- parent side ------------------------------------------------------------

class Progress:
    """A progress line on stderr: done/total, rate, ETA."""

    def __init__(self, total: int, stream: TextIO | None, every: float = 0.5) -> None:
        self.total, self.stream, self.every = total, stream, every
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._tty = bool(stream is not None and stream.isatty())

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.stream is not None and (now - self._last >= (self.every if self._tty else 5.0)
                                        or self.done == self.total):
            self._last = now
            self.stream.write(("\r" if self._tty else "") + self.line() + ("" if self._tty else "\n"))
            self.stream.flush()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        eta_text = f"{eta:6.0f}s" if eta != float("inf") else "     ?"
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{rate:7.1f} patients/s  ETA {eta_text}")

    def close(self) -> None:
        if self.stream is not None and self._tty:
            self.stream.write("\n")
            self.stream.flush()


def _run_identity(source_path: str, as_of: date, ruleset_sha: str) -> dict[str, str]:
    ident = {"input": str(Path(source_path).resolve()), "asOf": as_of.isoformat(), "ruleset": ruleset_sha}
    ident["run"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ident


def _done_keys(out: Path) -> set[str]:
    """Keys with a complete line; a torn last line (interrupted write) is cut off."""
    if not out.exists():
        return set()
    done: set[str] = set()
    good = 0
    with out.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                done.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                break
            good += len(line)
    if good != out.stat().st_size:
        with out.open("r+b") as f:
            f.truncate(good)
    return done


def _recorded(audit: Any, run_id: str, pending: set[str]) -> dict[str, str]:
    """Patients of this run whose audit record exists though their line does not."""
    if audit is None or not pending:
        return {}
    from sqlalchemy import select

    from cds.audit import AuditStore
    from cds.audit.models import Evaluation

    wanted = {instance_id(run_id, key): key for key in pending}
    store = AuditStore.from_settings(audit)
    try:
        prefix = f"batch:{run_id}:"
        query = select(Evaluation.hook_instance, Evaluation.id).where(
            Evaluation.channel == "batch", Evaluation.hook_instance.startswith(prefix))
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        store.close()
    return {wanted[hook]: record for hook, record in rows if hook in wanted}


def run_batch(source: Source, source_path: str, out: Path, *, as_of: date, ruleset_path: str | None,
              audit: Any, workers: int | None = None, scheduler: str | None = None,
              progress: TextIO | None = sys.stderr, chunk: int = 8) -> Summary:
    """Evaluate every patient of ``source`` not yet in ``out``; return the summary."""
    from cds.knowledge import load_ruleset

    started = time.monotonic()
    ruleset = load_ruleset(ruleset_path)
    ident = _run_identity(source_path, as_of, ruleset.sha256)
    state = out.with_name(out.name + ".run.json")
    if out.exists() and out.stat().st_size and state.exists():
        previous = json.loads(state.read_text())
        if previous != ident:
            raise InputError(f"{out} holds results of another screening (as of {previous.get('asOf')}, ruleset "
                             f"{str(previous.get('ruleset'))[:12]}, input {previous.get('input')}); "
                             "write to another file or delete it")
    state.write_text(json.dumps(ident, indent=2) + "\n")
    settings = Settings(as_of=as_of, ruleset_path=ruleset_path, audit=audit, run_id=ident["run"])
    keys = source.keys()
    done = _done_keys(out)
    pending = [k for k in keys if k not in done]
    recorded = _recorded(audit, ident["run"], set(pending))
    summary = Summary(skipped=len(keys) - len(pending), problems=len(source.problems))
    bar = Progress(len(pending), progress)
    work = ((source.read(key), recorded.get(key)) for key in pending)
    with out.open("a", encoding="utf-8") as sink:
        for problem in source.problems:
            if problem.key not in done:
                sink.write(json.dumps({"key": problem.key, "status": "input-problem", "error": problem.message})
                           + "\n")
        if scheduler:
            results = _on_dask(settings, work, scheduler, chunk)
        else:
            results = _on_processes(settings, work, workers or os.cpu_count() or 1, chunk)
        for batch in results:
            for line in batch:
                sink.write(json.dumps(line, separators=(",", ":")) + "\n")
                summary.patients += 1
                if line["status"] == "ok":
                    summary.by_triage[line["triage"]] += 1
                    for rec in line["evaluation"]["recommendations"]:
                        summary.actions[rec["action"]] += 1
                else:
                    summary.errors += 1
                    summary.by_triage["error"] += 1
            sink.flush()
            bar.advance(len(batch))
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def _chunks(work: Iterable[tuple[Item, str | None]], size: int) -> Iterator[list[tuple[Item, str | None]]]:
    batch: list[tuple[Item, str | None]] = []
    for pair in work:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _on_processes(settings: Settings, work: Iterable[tuple[Item, str | None]], workers: int,
                  chunk: int) -> Iterator[list[dict[str, Any]]]:
    if workers <= 1:
        for batch in _chunks(work, chunk):
            yield _evaluate_many(settings, batch)
        return
    import multiprocessing
    from functools import partial

    # fork: workers start at once and share the parent's imported code.
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(partial(_evaluate_many, settings), _chunks(work, chunk))


def _on_dask(settings: Settings, work: Iterable[tuple[Item, str | None]], scheduler: str,
             chunk: int) -> Iterator[list[dict[str, Any]]]:
    """Chunks submitted to a running Dask cluster, a bounded window in flight."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("--scheduler needs Dask: pip install 'cds[batch]'") from None
    client = Client(scheduler, timeout="30s")
    try:
        window = 4 * max(1, sum(client.nthreads().values()))
        chunks = _chunks(work, chunk)
        futures = as_completed()
        in_flight = 0
        for batch in chunks:
            futures.add(client.submit(_evaluate_many, settings, batch, pure=False))
            in_flight += 1
            if in_flight >= window:
                yield next(futures).result()
                in_flight -= 1
        for future in futures:
            yield future.result()
    finally:
        client.close()


def render_summary(summary: Summary, out: Path, audit: Any) -> str:
    data = summary.as_dict()
    lines = [f"screened {data['patients']} patients in {data['seconds']} s"
             + (f" ({data['per_second']}/s)" if data["per_second"] else "")
             + (f"; {data['skipped_already_done']} already done" if data["skipped_already_done"] else ""),
             "by triage: " + (", ".join(f"{k} {v}" for k, v in data["by_triage"].items()) or "none")]
    if data["top_actions"]:
        lines.append("top actions: " + ", ".join(f"{k} {v}" for k, v in data["top_actions"].items()))
    if data["errors"] or data["input_problems"]:
        lines.append(f"errors: {data['errors']} records refused, {data['input_problems']} input lines not read "
                     f"(each is a line in {out})")
    lines.append(f"results: {out}")
    lines.append("audit: " + (f"recorded ({audit.database_url.split('://')[0]})" if audit is not None
                              else "not recorded (--no-audit)"))
    return "\n".join(lines)
