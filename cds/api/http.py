"""HTTP plumbing shared by the blueprints: the request's body and caller,
responses, and the one mapping from errors to OperationOutcome answers."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from flask import Flask, Response, current_app, g, json, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from cds.api.auth import Authenticator, AuthRejected, Principal
from cds.api.logs import get_logger, stack_summary
from cds.api.metrics import Metrics
from cds.api.schemas import check_depth
from cds.api.service import Api
from cds.bootstrap import Config, Services
from cds.errors import CdsError, MalformedJson, PayloadTooLarge, UnsupportedMediaType, operation_outcome
from cds.fhir import MAX_BODY_BYTES, parse_json

JSON = "application/json"
FHIR_JSON = "application/fhir+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HTTP_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
               406: "not-supported", 413: "too-costly", 415: "not-supported"}


@dataclass
class Runtime:
    """Everything a request needs, built once by create_app."""

    config: Config
    services: Services
    api: Api
    metrics: Metrics
    authenticator: Authenticator | None


def runtime() -> Runtime:
    return current_app.extensions["cds"]  # type: ignore[no-any-return]


def respond(body: Any, status: int = 200, mimetype: str = JSON) -> Response:
    return Response(json.dumps(body), status=status, mimetype=mimetype)


def json_body() -> Any:
    """The request body as JSON, after the content-type and size checks."""
    if request.mimetype not in (JSON, FHIR_JSON):
        raise UnsupportedMediaType("must be application/json or application/fhir+json", where="Content-Type")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(f"body is over the limit of {MAX_BODY_BYTES} bytes") from None
    if not body:
        raise MalformedJson("the request body is empty")
    data = parse_json(body)
    check_depth(data)
    return data



def caller() -> Principal | None:
    """The verified client, or None when authentication is off (loopback only)."""
    rt = runtime()
    if rt.authenticator is None:
        return None
    audience = f"{rt.config.public_base_url}{request.path}"
    principal = rt.authenticator.verify(request.headers.get("Authorization"), audience)
    structlog.contextvars.bind_contextvars(client=principal.iss)
    return principal


def install(app: Flask) -> None:
    """Request ids, access log, metrics and error mapping for every endpoint."""

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        runtime().metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        get_logger().info("request", endpoint=endpoint, method=request.method, status=response.status_code,
                          duration_ms=round(seconds * 1000, 2))
        return response

    @app.teardown_request
    def _clear(_error: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()

    @app.errorhandler(AuthRejected)
    def _unauthenticated(error: AuthRejected) -> Response:
        runtime().metrics.auth_failures.inc()
        get_logger().warning("auth_refused", reason=error.reason)
        response = respond(operation_outcome(error), 401, FHIR_JSON)
        response.headers["WWW-Authenticate"] = 'Bearer realm="cds-services"'
        return response

    @app.errorhandler(CdsError)
    def _refused(error: CdsError) -> Response:
        log = get_logger()
        if error.status >= 500:
            log.error("request_failed", error=type(error).__name__, issue=error.issue_code)
        else:
            log.info("request_refused", error=type(error).__name__, issue=error.issue_code, status=error.status)
        return respond(operation_outcome(error), error.status, FHIR_JSON)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            mapped: CdsError = PayloadTooLarge(f"body is over the limit of {MAX_BODY_BYTES} bytes")
        else:
            mapped = CdsError(_http_text(status, error))
            mapped.status, mapped.issue_code = status, _HTTP_ISSUE.get(status, "exception")
        response = respond(operation_outcome(mapped), status, FHIR_JSON)
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        get_logger().error("internal_error", error=type(error).__name__, where=stack_summary(error))
        return respond(operation_outcome(error), 500, FHIR_JSON)


def _http_text(status: int, error: HTTPException) -> str:
    if status == 404:
        return f"no such endpoint: {request.method} {request.path[:120]}"
    if status == 405:
        return f"method {request.method} is not allowed on {request.path[:120]}"
    return (error.description or error.name or "error")[:300]
