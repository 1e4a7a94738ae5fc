"""``cds audit ...`` and ``cds db ...``: verify, export, replay, retention, migrations.

Every command takes ``--database`` (default ``$CDS_DATABASE_URL``, else the
SQLite file under the instance directory) and ``--schema`` (PostgreSQL).
Exit codes as elsewhere: 0 success, 1 a broken chain or a failure, 2 bad
input. Heavy imports happen inside the commands, so ``cds`` starts fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NoReturn

import click

_database = click.option("--database", "database", envvar="CDS_DATABASE_URL", default=None,
                         help="SQLAlchemy URL of the audit store (default: $CDS_DATABASE_URL, else the "
                              "SQLite file in $CDS_INSTANCE_DIR).")
_schema = click.option("--schema", envvar="CDS_AUDIT_SCHEMA", default=None, help="PostgreSQL schema.")


def _fail(error: BaseException) -> NoReturn:
    from cds.errors import CdsError

    if isinstance(error, CdsError):
        click.echo(f"error: {error.diagnostics}", err=True)
        sys.exit(2 if error.status < 500 and error.status != 404 else 1)
    click.echo(f"internal error: {type(error).__name__}: {error}", err=True)
    sys.exit(1)


def _open(database: str | None, schema: str | None, *, migrate: bool = False) -> Any:
    from cds.audit.settings import AuditSettings
    from cds.audit.store import AuditStore

    settings = AuditSettings.from_env()
    if database:
        settings = replace(settings, database_url=database)
    if schema:
        settings = replace(settings, schema=schema)
    return AuditStore.from_settings(replace(settings, migrate=migrate))


def _run(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in one place
        _fail(exc)


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=name) from None


@click.group("audit")
def audit() -> None:
    """The audit trail: verify the hash chain, export FHIR, replay, retention (docs/audit.md)."""


@audit.command("verify")
@_database
@_schema
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--expect-head", default=None, metavar="SEQ:HASH",
              help="A head published earlier (`cds audit head`): the chain must still contain it.")
def verify(database: str | None, schema: str | None, as_json: bool, expect_head: str | None) -> None:
    """Walk the chain; name the first altered, deleted or out-of-order record (exit 1)."""
    store = _run(lambda: _open(database, schema))
    try:
        report = _run(store.verify)
        if expect_head and report.ok:
            _run(lambda: _check_published_head(store, report, expect_head))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.ok:
        click.echo(f"ok: {report.checked} records, seq {report.first_seq or 0}..{report.head_seq}, "
                   f"head {report.head_hash}")
        for note in report.notes:
            click.echo(f"note: {note}")
    else:
        click.echo(f"BROKEN at {report.problem} ({report.checked} records verified before it)")
    sys.exit(0 if report.ok else 1)


def _check_published_head(store: Any, report: Any, expect_head: str) -> None:
    from sqlalchemy import select

    from cds.audit.chain import Problem
    from cds.audit.models import AuditRecord
    from cds.errors import InputError

    seq_text, _, digest = expect_head.partition(":")
    if not seq_text.isdigit() or len(digest) != 64:
        raise InputError("expected SEQ:HASH", where="--expect-head")
    seq = int(seq_text)
    with store.engine.connect() as conn:
        actual = conn.execute(select(AuditRecord.hash).where(AuditRecord.seq == seq)).scalar()
    if actual != digest and not (report.first_seq and seq < report.first_seq):
        report.problem = Problem(seq, None, "differs from the published head (records rewritten or truncated)"
                                 if actual else "the published head is missing (chain truncated)")


@audit.command("head")
@_database
@_schema
def head(database: str | None, schema: str | None) -> None:
    """Print SEQ:HASH of the last record, to publish outside the database."""
    store = _run(lambda: _open(database, schema))
    try:
        seq, digest = _run(store.head)
    finally:
        store.close()
    click.echo(f"{seq}:{digest}")


@audit.command("export")
@_database
@_schema
@click.option("--format", "fmt", type=click.Choice(["fhir"]), default="fhir", show_default=True)
@click.option("--since", default=None, help="Evaluations received on or after YYYY-MM-DD.")
@click.option("--until", default=None, help="Evaluations received before YYYY-MM-DD.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="NDJSON file (default: standard output).")
def export(database: str | None, schema: str | None, fmt: str, since: str | None, until: str | None,
           output: str) -> None:
    """One FHIR R4 AuditEvent per evaluation and one Provenance per recommendation, as NDJSON."""
    from cds.audit.fhir_export import export_ndjson

    start, end = _day(since, "--since"), _day(until, "--until")
    store = _run(lambda: _open(database, schema))
    try:
        with click.open_file(output, "w", encoding="utf-8") as out:
            events, provenances = _run(lambda: export_ndjson(store.iter_evaluations(since=start, until=end), out))
    finally:
        store.close()
    click.echo(f"exported {events} AuditEvent and {provenances} Provenance resources", err=True)


@audit.command("replay")
@_database
@_schema
@click.option("--ruleset", "ruleset_path", required=True, type=click.Path(file_okay=False, exists=True),
              help="The candidate ruleset directory.")
@click.option("--since", default=None, help="Evaluations received on or after YYYY-MM-DD.")
@click.option("--until", default=None, help="Evaluations received before YYYY-MM-DD.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--all", "show_all", is_flag=True, help="List unchanged evaluations too.")
def replay_command(database: str | None, schema: str | None, ruleset_path: str, since: str | None,
                   until: str | None, fmt: str, show_all: bool) -> None:
    """Re-evaluate recorded inputs under another ruleset; report what would change."""
    from cds.audit.replay import render_text, replay
    from cds.evaluation import Evaluator
    from cds.knowledge import load_ruleset

    start, end = _day(since, "--since"), _day(until, "--until")
    evaluator = _run(lambda: Evaluator(load_ruleset(ruleset_path)))
    store = _run(lambda: _open(database, schema))
    try:
        report = _run(lambda: replay(evaluator, store.iter_evaluations(since=start, until=end, with_input=True)))
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(changed_only=not show_all), indent=2))
    else:
        click.echo(render_text(report, changed_only=not show_all))


replay_command.name = "replay"


@audit.command("retention")
@_database
@_schema
@click.option("--input-days", type=click.IntRange(min=1), envvar="CDS_AUDIT_INPUT_RETENTION_DAYS", default=None,
              help="Purge stored inputs (PHI) older than this many days "
                   "(default: $CDS_AUDIT_INPUT_RETENTION_DAYS).")
@click.option("--prune-before", default=None,
              help="Also delete whole records made before YYYY-MM-DD (the chain keeps an anchor).")
def retention(database: str | None, schema: str | None, input_days: int | None, prune_before: str | None) -> None:
    """Apply retention: purge old stored inputs, optionally prune old records."""
    if input_days is None and prune_before is None:
        raise click.UsageError("nothing to do: give --input-days (or set CDS_AUDIT_INPUT_RETENTION_DAYS) "
                               "and/or --prune-before")
    cutoff = _day(prune_before, "--prune-before")
    store = _run(lambda: _open(database, schema))
    try:
        if input_days is not None:
            before = datetime.now(UTC) - timedelta(days=input_days)
            count = _run(lambda: store.purge_inputs(before))
            click.echo(f"purged the stored input of {count} evaluations received before {before:%Y-%m-%d %H:%M}Z")
        if cutoff is not None:
            pruned = _run(lambda: store.prune(cutoff))
            click.echo(f"pruned {pruned} records made before {prune_before}")
    finally:
        store.close()


@audit.command("evaluate")
@_database
@_schema
@click.argument("source", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--as-of", "as_of", help="Evaluation date YYYY-MM-DD (default: today).")
@click.option("--ruleset", "ruleset_path", type=click.Path(file_okay=False), default=None,
              help="Ruleset directory (default: $CDS_RULESET or the bundled one).")
@click.option("--user", default=None, help="Who asks (recorded as the user), e.g. Practitioner/123.")
def evaluate_recorded(database: str | None, schema: str | None, source: str, as_of: str | None,
                      ruleset_path: str | None, user: str | None) -> None:
    """Evaluate a Bundle like `cds evaluate`, recording it in the trail first (channel cli)."""
    import getpass

    from cds.audit.recording import Caller, evaluate_and_record
    from cds.cli import _read_source
    from cds.evaluation import Evaluator
    from cds.fhir import MAX_BODY_BYTES
    from cds.knowledge import load_ruleset

    day = _day(as_of, "--as-of") if as_of else None
    when = day.date() if day else date.today()
    evaluator = _run(lambda: Evaluator(load_ruleset(ruleset_path)))
    body = _run(lambda: _read_source(source, MAX_BODY_BYTES))
    store = _run(lambda: _open(database, schema, migrate=True))
    try:
        caller = Caller(channel="cli", client=f"cli:{getpass.getuser()}", user=user)
        result = _run(lambda: evaluate_and_record(evaluator, store, body, when, caller))
    finally:
        store.close()
    click.echo(json.dumps(result.evaluation, indent=2))
    click.echo(f"recorded as {result.record_id}", err=True)


@audit.command("token")
@click.option("--name", required=True, help="Who the token is for (written beside its hash).")
def token(name: str) -> None:
    """Issue an auditor token: the token on stdout, the line for the tokens file on stderr."""
    from cds.audit.auditors import new_token

    value, line = new_token()
    click.echo(value)
    click.echo(f"add to $CDS_AUDITOR_TOKENS_FILE:\n{line} {name}", err=True)


@click.group("db")
def db() -> None:
    """The database schema: the audit trail's and the observation intake's
    Alembic histories, shipped in the package."""


def _histories() -> dict[str, Any]:
    from cds.audit.migrate import AUDIT
    from cds.intake.migrate import INTAKE

    return {"audit": AUDIT, "intake": INTAKE}


@db.command("upgrade")
@_database
@_schema
@click.option("--revision", default="head", show_default=True, help="Audit revision (intake goes to head).")
def upgrade(database: str | None, schema: str | None, revision: str) -> None:
    """Migrate the database (safe to run while workers start)."""
    from cds.audit.database import make_engine
    from cds.audit.settings import AuditSettings

    settings = AuditSettings.from_env()
    engine = _run(lambda: make_engine(database or settings.database_url, schema=schema or settings.schema))
    try:
        for name, history in _histories().items():
            target = revision if name == "audit" else "head"
            _run(lambda: history.upgrade(engine, target))  # noqa: B023 - called at once
            click.echo(f"{name} schema at revision {_run(lambda: history.current_revision(engine))}")  # noqa: B023
    finally:
        engine.dispose()


@db.command("current")
@_database
@_schema
def current(database: str | None, schema: str | None) -> None:
    """Print each schema's revision (and the one this version needs)."""
    from cds.audit.database import make_engine
    from cds.audit.settings import AuditSettings

    settings = AuditSettings.from_env()
    engine = _run(lambda: make_engine(database or settings.database_url, schema=schema or settings.schema))
    try:
        for name, history in _histories().items():
            rev = _run(lambda: history.current_revision(engine))  # noqa: B023 - called at once
            click.echo(f"{name}: current {rev or '(empty)'}; this version needs {history.head_revision()}")
    finally:
        engine.dispose()
