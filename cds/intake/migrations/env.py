"""Alembic environment of the intake tables: handed a live connection by cds.intake.migrate.

Its own version table keeps the intake history apart from the audit's.
"""

from __future__ import annotations

from alembic import context

from cds.intake.models import Base

VERSION_TABLE = "intake_alembic_version"

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run intake migrations through cds.intake.migrate.upgrade")

context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite", transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
