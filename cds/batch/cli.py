"""``cds batch``: screen a population."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import click


@click.command()
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Results, one JSON line per patient; appended to, so a run can resume.")
@click.option("--as-of", "as_of", help="Evaluation date YYYY-MM-DD (default: today; fixed for a resumed run).")
@click.option("--ruleset", "ruleset_path", type=click.Path(file_okay=False), default=None,
              help="Ruleset directory (default: $CDS_RULESET or the bundled one).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: every core).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A Dask scheduler (e.g. tcp://10.0.0.5:8786): run there instead of local processes.")
@click.option("--database", envvar="CDS_DATABASE_URL", default=None,
              help="Audit store URL (default: $CDS_DATABASE_URL, else the SQLite file in $CDS_INSTANCE_DIR).")
@click.option("--schema", envvar="CDS_AUDIT_SCHEMA", default=None, help="PostgreSQL schema of the audit store.")
@click.option("--no-audit", is_flag=True, help="Do not record the evaluations in the audit trail.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              help="Also write the summary as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def batch(source: str, out: str, as_of: str | None, ruleset_path: str | None, workers: int | None,
          scheduler: str | None, database: str | None, schema: str | None, no_audit: bool,
          summary_json: str | None, quiet: bool) -> None:
    """Evaluate every patient of SOURCE: a FHIR Bulk Data export (a directory
    of NDJSON files, one per resource type) or a directory of bundles."""
    from cds.batch.runner import render_summary, run_batch
    from cds.batch.sources import open_source
    from cds.cli import _as_of, _fail

    when = _as_of(as_of) if as_of else _resumed_date(Path(out)) or date.today()
    try:
        audit = None if no_audit else _audit_settings(database, schema)
        summary = run_batch(open_source(source), source, Path(out), as_of=when, ruleset_path=ruleset_path,
                            audit=audit, workers=workers, scheduler=scheduler,
                            progress=None if quiet else sys.stderr)
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in one place
        _fail(exc)
    click.echo(render_summary(summary, Path(out), audit))
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")


def _resumed_date(out: Path) -> date | None:
    """A resumed run keeps its evaluation date unless told otherwise."""
    state = out.with_name(out.name + ".run.json")
    if out.exists() and state.exists():
        return date.fromisoformat(json.loads(state.read_text())["asOf"])
    return None


def _audit_settings(database: str | None, schema: str | None) -> Any:
    from cds.audit import AuditStore
    from cds.audit.settings import AuditSettings

    settings = AuditSettings.from_env(dict(os.environ))
    if database:
        settings = replace(settings, database_url=database)
    if schema:
        settings = replace(settings, schema=schema)
    # Migrated once here; the workers then only check the revision.
    AuditStore.from_settings(settings).close()
    return replace(settings, migrate=False)
