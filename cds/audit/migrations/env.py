"""Alembic environment: always handed a live connection by cds.audit.migrate."""

from __future__ import annotations

from alembic import context

from cds.audit.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run audit migrations with `cds db upgrade` (cds.audit.migrate.upgrade)")

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
