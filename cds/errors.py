"""The one exception hierarchy of the service.

Every error the service raises on purpose derives from :class:`CdsError`.
The edges (command line, HTTP) map these to an exit code or an HTTP status
and a FHIR OperationOutcome, once, in :func:`operation_outcome`.
"""

from __future__ import annotations

from typing import Any


class CdsError(Exception):
    """Root of every error the service raises deliberately."""

    #: HTTP status the API answers with; the CLI maps 4xx to exit 2, else 1.
    status = 500
    #: FHIR IssueType code for the OperationOutcome.
    issue_code = "exception"
    severity = "error"

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(self.diagnostics)

    @property
    def diagnostics(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class InputError(CdsError):
    """The client sent something the service cannot accept."""

    status = 400
    issue_code = "invalid"


class MalformedJson(InputError):
    issue_code = "structure"


class PayloadTooLarge(InputError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(InputError):
    status = 415
    issue_code = "not-supported"


class UnknownUnit(InputError):
    issue_code = "code-invalid"


class RulesetError(CdsError):
    """A ruleset file is invalid; it is refused whole, never half-loaded."""

    issue_code = "invalid"

    def __init__(self, message: str, *, file: str | None = None, rule: str | None = None,
                 field: str | None = None) -> None:
        self.file, self.rule, self.field = file, rule, field
        where = ", ".join(p for p in (
            file, f"rule {rule}" if rule else None, f"field {field}" if field else None) if p)
        super().__init__(message, where=where or None)


class EngineError(CdsError):
    """The rules engine failed; the evaluation has no valid result."""

    issue_code = "exception"


class RuleActionError(EngineError):
    """A rule's action raised: the evaluation fails loudly, naming the rule."""

    def __init__(self, rule: str, cause: BaseException) -> None:
        self.rule = rule
        self.cause = cause
        super().__init__(f"rule {rule} failed: {type(cause).__name__}: {cause}")


class SafetyViolation(EngineError):
    """A rule tried to hide a red flag; refusing is safer than answering."""


def operation_outcome(error: BaseException) -> dict[str, Any]:
    """FHIR R4 OperationOutcome for any exception (unexpected ones say little)."""
    if isinstance(error, CdsError):
        issue = {"severity": error.severity, "code": error.issue_code,
                 "diagnostics": error.diagnostics}
    else:
        issue = {"severity": "fatal", "code": "exception",
                 "diagnostics": "internal error; the failure was logged"}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class StoreUnavailable(CdsError):
    """The audit store cannot record: the service fails closed."""

    status = 503
    issue_code = "transient"


class AuthenticationError(CdsError):
    """Missing or bad credentials. Says nothing more, on purpose."""

    status = 401
    issue_code = "login"

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message)


class NotFound(CdsError):
    status = 404
    issue_code = "not-found"


class PreconditionFailed(CdsError):
    """Data the evaluation needs could not be had (CDS Hooks 412)."""

    status = 412
    issue_code = "incomplete"


class Conflict(CdsError):
    status = 409
    issue_code = "conflict"
