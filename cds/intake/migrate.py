"""Run the intake migrations (their own Alembic history) on the audit store's engine.

Workers starting together are serialized like the audit's: an advisory
lock on PostgreSQL (a key of our own), a write transaction on SQLite.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from cds.audit.database import SQLITE_BEGIN

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "intake_alembic_version"
_MIGRATION_LOCK = 0x6364736E74616B65  # "cdsntake"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _run(engine: Engine, work: str, revision: str) -> None:
    with engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as connection:
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            getattr(command, work)(alembic_config(connection), revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the intake tables to ``revision`` in one transaction."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, "downgrade", revision)
