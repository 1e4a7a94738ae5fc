"""Run packaged Alembic migration histories against a live connection.

Several workers may start at once: PostgreSQL serializes them with an
advisory lock, SQLite with a write transaction, so exactly one migrates and
the others find the schema current. The audit trail has one history (here)
and the observation intake another (cds.intake.migrate), each with its own
version table and lock key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from cds.audit.database import SQLITE_BEGIN


@dataclass(frozen=True)
class MigrationHistory:
    """One Alembic history shipped in the package."""

    script_location: Path
    version_table: str
    #: pg_advisory_xact_lock key, unique per history
    lock_key: int

    def alembic_config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str:
        head = ScriptDirectory.from_config(self.alembic_config()).get_current_head()
        assert head is not None
        return head

    def current_revision(self, engine: Engine) -> str | None:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
            return context.get_current_revision()

    def upgrade(self, engine: Engine, revision: str = "head") -> None:
        """Bring the schema to ``revision`` in one transaction."""
        self._run(engine, command.upgrade, revision)

    def downgrade(self, engine: Engine, revision: str) -> None:
        self._run(engine, command.downgrade, revision)

    def _run(self, engine: Engine, work: object, revision: str) -> None:
        with engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as connection:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.lock_key})
                work(self.alembic_config(connection), revision)  # type: ignore[operator]


#: "cdsaudit" in ASCII, as an int
AUDIT = MigrationHistory(Path(__file__).resolve().parent / "migrations", "alembic_version", 0x6364736175646974)
MIGRATIONS = AUDIT.script_location
alembic_config = AUDIT.alembic_config
head_revision = AUDIT.head_revision
current_revision = AUDIT.current_revision
upgrade = AUDIT.upgrade
downgrade = AUDIT.downgrade
