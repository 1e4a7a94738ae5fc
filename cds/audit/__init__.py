"""The audit trail: every evaluation and feedback, hash-chained, on SQLite or PostgreSQL.

Public surface: :class:`AuditStore` (an AuditSink), :func:`open_store`
(from the environment), :class:`AuditSettings`. Flask appears only in
``cds.audit.http``; the store knows nothing of HTTP. See docs/audit.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from cds.audit.chain import VerifyReport
from cds.audit.settings import AuditSettings
from cds.audit.store import AuditStore, EvaluationPage


def open_store(env: Mapping[str, str] | None = None) -> AuditStore:
    """The store configured by CDS_DATABASE_URL and friends (docs/audit.md)."""
    return AuditStore.from_settings(AuditSettings.from_env(env))


__all__ = ["AuditSettings", "AuditStore", "EvaluationPage", "VerifyReport", "open_store"]
