"""The intake tables' own Alembic history, run like the audit's
(cds.audit.migrate.MigrationHistory) on the audit store's engine."""

from __future__ import annotations

from pathlib import Path

from cds.audit.migrate import MigrationHistory

#: "cdsntake" in ASCII, as an int
INTAKE = MigrationHistory(Path(__file__).resolve().parent / "migrations", "intake_alembic_version",
                          0x6364736E74616B65)
MIGRATIONS = INTAKE.script_location
VERSION_TABLE = INTAKE.version_table
alembic_config = INTAKE.alembic_config
head_revision = INTAKE.head_revision
current_revision = INTAKE.current_revision
upgrade = INTAKE.upgrade
downgrade = INTAKE.downgrade
