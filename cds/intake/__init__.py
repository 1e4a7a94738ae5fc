"""Observation intake: EHRs post resources as they are recorded; the service keeps each
patient's record (with versions), re-evaluates that patient, stores what changed, lists it
on a clinician worklist and notifies subscribers when a triage rises to urgent or emergency.

Everything here but ``http`` is free of Flask: ``requests`` (FHIR REST requests to
operations, pure), ``diff`` (what changed, pure), ``store`` and ``models`` (the
record in the audit database), ``service`` (the use cases and the transaction
boundary), ``notify`` (outbox delivery, signing, back-off, the one worker thread),
``subscriptions``, ``migrate`` (its own Alembic history). See docs/intake.md.
"""

from __future__ import annotations

from cds.intake.wiring import IntakeRuntime, build

__all__ = ["IntakeRuntime", "build"]
