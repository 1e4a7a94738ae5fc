"""Intake errors: each a CdsError with its FHIR status and issue code, mapped once at the edge."""

from __future__ import annotations

from cds.errors import CdsError, Conflict, InputError, NotFound


class UnsupportedResourceType(NotFound):
    """A type the rules do not read cannot be posted on its own (in a Bundle it is ignored)."""

    issue_code = "not-supported"


class UnknownPatient(CdsError):
    """A resource names a patient the record does not hold (post the Patient first)."""

    status = 422
    issue_code = "not-found"


class Unprocessable(CdsError):
    """Valid FHIR that breaks a rule of this server (no subject, a resource changing patient)."""

    status = 422
    issue_code = "business-rule"


class VersionConflict(CdsError):
    """If-Match named a version that is not the current one (FHIR: 412)."""

    status = 412
    issue_code = "conflict"


class ResourceConflict(Conflict):
    """A create for an id that holds other content, or concurrent posts for one patient (409)."""


class TooManyEntries(InputError):
    status = 413
    issue_code = "too-costly"


__all__ = ["ResourceConflict", "TooManyEntries", "UnknownPatient", "Unprocessable", "UnsupportedResourceType",
           "VersionConflict"]
