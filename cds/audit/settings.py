"""Audit configuration from the environment, read once by the factory.

=============================== ===================================================
``CDS_DATABASE_URL``            SQLAlchemy URL. Default: SQLite (WAL) at
                                ``$CDS_INSTANCE_DIR/audit.sqlite3``. Production:
                                ``postgresql+psycopg://user@host/db``.
``CDS_INSTANCE_DIR``            Where the default SQLite file lives (``instance``).
``CDS_AUDIT_SCHEMA``            PostgreSQL schema for the audit tables (default:
                                the connection's search path, usually ``public``).
``CDS_AUDIT_STORE_INPUT``       What PHI is kept beside each record: ``full`` (raw
                                request and normalized facts), ``facts`` (facts
                                only; the default), ``hash`` (digests only).
``CDS_AUDIT_INPUT_RETENTION_DAYS`` Stored inputs older than this are purged by
                                ``cds audit retention``; records and the chain stay.
``CDS_AUDIT_MIGRATE``           ``1`` (default): migrate on start; ``0``: refuse
                                to start on an old schema (run ``cds db upgrade``).
``CDS_AUDITOR_TOKENS_FILE``     sha256 hashes of auditor bearer tokens (docs/audit.md).
=============================== ===================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cds.errors import CdsError

STORE_INPUT_MODES = ("full", "facts", "hash")


class AuditConfigError(CdsError):
    """The audit configuration is unusable; the service must not start."""


@dataclass(frozen=True)
class AuditSettings:
    database_url: str
    schema: str | None = None
    store_input: str = "facts"
    input_retention_days: int | None = None
    migrate: bool = True
    auditor_tokens_file: str | None = None

    def __post_init__(self) -> None:
        if self.store_input not in STORE_INPUT_MODES:
            raise AuditConfigError(f"CDS_AUDIT_STORE_INPUT must be one of {', '.join(STORE_INPUT_MODES)}, "
                                   f"not {self.store_input!r}")
        if self.input_retention_days is not None and self.input_retention_days < 1:
            raise AuditConfigError("CDS_AUDIT_INPUT_RETENTION_DAYS must be a positive number of days")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuditSettings:
        env = os.environ if env is None else env
        url = env.get("CDS_DATABASE_URL") or default_database_url(env.get("CDS_INSTANCE_DIR"))
        days = env.get("CDS_AUDIT_INPUT_RETENTION_DAYS")
        try:
            retention = int(days) if days else None
        except ValueError:
            raise AuditConfigError(f"CDS_AUDIT_INPUT_RETENTION_DAYS is not a number: {days!r}") from None
        return cls(database_url=url, schema=env.get("CDS_AUDIT_SCHEMA") or None,
                   store_input=env.get("CDS_AUDIT_STORE_INPUT", "facts"),
                   input_retention_days=retention,
                   migrate=env.get("CDS_AUDIT_MIGRATE", "1") not in ("0", "false", "no"),
                   auditor_tokens_file=env.get("CDS_AUDITOR_TOKENS_FILE") or None)


def default_database_url(instance_dir: str | None = None) -> str:
    """SQLite file under the instance directory (created if missing)."""
    directory = Path(instance_dir or "instance").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'audit.sqlite3'}"
