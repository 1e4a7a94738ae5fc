"""Alembic migrations for the audit store, shipped inside the package.

Run programmatically by :func:`cds.audit.migrate.upgrade` (on start, or
``cds db upgrade``); there is no alembic.ini to find.
"""
