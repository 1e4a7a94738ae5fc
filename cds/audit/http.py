"""The audit read API as a Flask blueprint (the only Flask in cds.audit).

``GET /audit/evaluations``             filtered, paged summaries
``GET /audit/evaluations/<id>``        the whole trace
``GET /audit/rules/<rule>/stats``      firings, acceptance and override rates
``GET /audit/verify``                  the chain check (same as ``cds audit verify``)

Every route needs ``Authorization: Bearer <auditor token>`` (cds.audit.auditors);
a CDS client's JWT is refused. Errors are OperationOutcomes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import structlog
from flask import Blueprint, Response, jsonify, request

from cds.audit.auditors import AuditorTokens
from cds.audit.store import MAX_PAGE, AuditStore
from cds.errors import AuthenticationError, CdsError, InputError, operation_outcome

log = structlog.get_logger("cds.audit.http")

_FILTERS = ("patient", "rule", "action", "triage", "client", "user", "outcome")


def audit_blueprint(store: AuditStore, auditor_tokens: AuditorTokens) -> Blueprint:
    bp = Blueprint("audit", __name__, url_prefix="/audit")

    @bp.before_request
    def _authenticate() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        auditor = auditor_tokens.auditor(token.strip()) if scheme.lower() == "bearer" else None
        if auditor is None:
            log.warning("audit_access_refused", path=request.path, remote=request.remote_addr)
            raise AuthenticationError("auditor credential required")
        log.info("audit_access", auditor=auditor, path=request.path, query=request.query_string.decode()[:500])

    @bp.errorhandler(CdsError)
    def _cds_error(error: CdsError) -> tuple[Response, int, dict[str, str]]:
        headers = {"WWW-Authenticate": 'Bearer realm="cds-audit"'} if error.status == 401 else {}
        return jsonify(operation_outcome(error)), error.status, headers

    @bp.get("/evaluations")
    def list_evaluations() -> Any:
        args = request.args
        filters = {name: args[name] for name in _FILTERS if args.get(name)}
        page = store.list_evaluations(**filters, since=_moment(args.get("since"), "since"),
                                      until=_moment(args.get("until"), "until"),
                                      after=_integer(args.get("after"), "after"),
                                      limit=_integer(args.get("limit"), "limit") or 50)
        body: dict[str, Any] = {"items": page.items, "next": None}
        if page.next_after is not None:
            query = {k: v for k, v in args.items() if k != "after"}
            query["after"] = str(page.next_after)
            body["next"] = request.path + "?" + "&".join(f"{k}={_quote(v)}" for k, v in query.items())
        return jsonify(body)

    @bp.get("/evaluations/<evaluation_id>")
    def get_evaluation(evaluation_id: str) -> Any:
        return jsonify(store.get_evaluation(evaluation_id, include_raw=request.args.get("include") == "raw"))

    @bp.get("/rules/<path:rule>/stats")
    def rule_stats(rule: str) -> Any:
        return jsonify(store.rule_stats(rule, since=_moment(request.args.get("since"), "since"),
                                        until=_moment(request.args.get("until"), "until")))

    @bp.get("/verify")
    def verify() -> Any:
        report = store.verify()
        return jsonify(report.as_dict())

    return bp


def _moment(value: str | None, name: str) -> datetime | None:
    """A date (midnight UTC) or an ISO 8601 date-time (UTC if no offset)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{value[:40]!r} is not a date or date-time", where=f"query parameter {name}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _integer(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) > 10**15:
        raise InputError("must be a non-negative integer", where=f"query parameter {name}")
    number = int(value)
    if name == "limit" and not 1 <= number <= MAX_PAGE:
        raise InputError(f"must be 1..{MAX_PAGE}", where="query parameter limit")
    return number


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
