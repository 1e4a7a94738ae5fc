"""The intake over HTTP (the only Flask in cds.intake): parse, call one use case, answer per FHIR.

``POST /fhir``                          transaction or batch Bundle
``POST /fhir/{type}``                   create (If-None-Exist honoured); ``Subscription`` registers a REST hook
``PUT /fhir/{type}/{id}``               create or update (If-Match honoured)
``GET /fhir/{type}/{id}[/_history/{v}]`` read what is on record
``GET /worklist``                       patients whose suggestions changed, most urgent first

Same client authentication as the CDS Hooks endpoints; errors are
OperationOutcomes through the app's one error mapping.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, Response, request

from cds.api.auth import Principal
from cds.api.http import FHIR_JSON, caller, json_body, respond
from cds.errors import CdsError, InputError, NotFound, operation_outcome
from cds.intake import requests as rq
from cds.intake.service import Client, Outcome
from cds.intake.wiring import IntakeRuntime, build

EXTENSION = "cds_intake"


def register(app: Flask, config: Any, services: Any, metrics: Any = None) -> IntakeRuntime | None:
    """Mount the intake when the audit lives in a database; return its runtime (or None)."""
    observe = (lambda evaluation: metrics.observe_evaluation(evaluation, "intake")) if metrics is not None else None
    runtime = build(config, services, observe=observe)
    if runtime is None:
        services.notes.append("observation intake (/fhir, /worklist) is off: it needs the audit database "
                              "(CDS_DATABASE_URL)")
        return None
    base_url = (getattr(config, "public_base_url", None) or "").rstrip("/")
    runtime.service.worklist_url = f"{base_url}/worklist"
    app.extensions[EXTENSION] = runtime
    app.register_blueprint(_blueprint(runtime))
    if getattr(config, "web_users", None):
        from cds.intake.web import worklist_pages

        app.register_blueprint(worklist_pages(runtime))  # /web/worklist, on the web pages' sign-in
    return runtime


def _client(principal: Principal | None) -> Client:
    return Client(principal.iss, principal.jti) if principal is not None else Client()


def _status_line(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _entry(outcome: Outcome) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _status_line(outcome.status)}
    if outcome.note == "ignored":
        response["outcome"] = _information(f"{outcome.op.where}: {outcome.op.rtype} is not read by the rules; "
                                           "not stored")
    else:
        response.update(location=outcome.location, etag=_etag(outcome.version), lastModified=outcome.last_modified)
    return {"fullUrl": f"{outcome.op.rtype}/{outcome.op.rid}", "response": response}


def _information(text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": text}]}


def _error_entry(error: CdsError) -> dict[str, Any]:
    return {"response": {"status": _status_line(error.status), "outcome": operation_outcome(error)}}


def _single(outcome: Outcome) -> Response:
    minimal = "return=minimal" in request.headers.get("Prefer", "")
    response = respond({} if minimal else outcome.resource, outcome.status, FHIR_JSON)
    if minimal:
        response.set_data(b"")
    response.headers["Location"] = f"{request.host_url.rstrip('/')}/fhir/{outcome.location}"
    response.headers["ETag"] = _etag(outcome.version)
    response.headers["Last-Modified"] = outcome.last_modified
    return response


def _blueprint(runtime: IntakeRuntime) -> Blueprint:
    bp = Blueprint("intake", __name__)
    service = runtime.service

    @bp.post("/fhir")
    def post_bundle() -> Response:
        client = _client(caller())
        parsed = rq.bundle(json_body())
        if parsed.kind == "transaction":
            ops = [op for op in parsed.operations if isinstance(op, rq.Operation)]
            result = service.transaction(ops, client)
            return respond({"resourceType": "Bundle", "type": "transaction-response",
                            "entry": [_entry(o) for o in result.outcomes]}, 200, FHIR_JSON)
        answers = service.batch(parsed.operations, client)
        return respond({"resourceType": "Bundle", "type": "batch-response",
                        "entry": [_entry(a) if isinstance(a, Outcome) else _error_entry(a) for a in answers]},
                       200, FHIR_JSON)

    @bp.post("/fhir/<rtype>")
    def create(rtype: str) -> Response:
        client = _client(caller())
        body = json_body()
        if rtype == "Subscription":
            return _subscription(client, None, body)
        op = rq.single("POST", rtype, None, body, if_none_exist=request.headers.get("If-None-Exist"))
        return _single(service.transaction([op], client).outcomes[0])

    @bp.put("/fhir/<rtype>/<rid>")
    def update(rtype: str, rid: str) -> Response:
        client = _client(caller())
        body = json_body()
        if rtype == "Subscription":
            return _subscription(client, rid, body)
        op = rq.single("PUT", rtype, rid, body, if_match=request.headers.get("If-Match"))
        return _single(service.transaction([op], client).outcomes[0])

    def _subscription(client: Client, sid: str | None, body: Any) -> Response:
        status, resource = runtime.subscriptions.put(
            client.iss, sid, body, runtime.now(), if_match=rq.parse_etag(request.headers.get("If-Match"), "If-Match"))
        response = respond(resource, status, FHIR_JSON)
        version = resource["meta"]["versionId"]
        response.headers["Location"] = f"{request.host_url.rstrip('/')}/fhir/Subscription/{resource['id']}" \
                                       f"/_history/{version}"
        response.headers["ETag"] = _etag(int(version))
        return response

    @bp.get("/fhir/<rtype>/<rid>")
    def read(rtype: str, rid: str) -> Response:
        client = _client(caller())
        if rtype == "Subscription":
            found = runtime.subscriptions.get(client.iss, rid)
        else:
            found = service.read(client, rtype, rid)
        if found is None:
            raise NotFound(f"{rtype[:64]}/{rid[:64]} is not on record")
        response = respond(found, 200, FHIR_JSON)
        response.headers["ETag"] = _etag(int((found.get("meta") or {}).get("versionId", "1")))
        return response

    @bp.get("/fhir/<rtype>/<rid>/_history/<vid>")
    def vread(rtype: str, rid: str, vid: str) -> Response:
        client = _client(caller())
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses (a 500 before)
        if not rq.DIGITS.fullmatch(vid):
            raise InputError("the version must be a number", where="url")
        found = service.read(client, rtype, rid, int(vid))
        if found is None:
            raise NotFound(f"{rtype[:64]}/{rid[:64]} has no version {vid}")
        return respond(found, 200, FHIR_JSON)

    @bp.get("/worklist")
    def worklist() -> Response:
        client = _client(caller())
        limit = request.args.get("limit", "200")
        if not rq.DIGITS.fullmatch(limit) or not 1 <= int(limit) <= 1000:
            raise InputError("must be 1..1000", where="query parameter limit")
        return respond(service.worklist(client, include_acknowledged=request.args.get("all") in ("1", "true"),
                                        limit=int(limit)))

    return bp
