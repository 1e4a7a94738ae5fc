"""The REST API beside CDS Hooks: evaluation, rulesets, health, metrics, OpenAPI."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, request

from cds.api import openapi
from cds.api.http import FHIR_JSON, JSON, caller, json_body, respond, runtime
from cds.api.logs import get_logger
from cds.errors import CdsError

bp = Blueprint("rest", __name__)


@bp.post("/evaluate")
def evaluate() -> Response:
    principal = caller()
    data = json_body()
    started = time.perf_counter()
    api = runtime().api
    # as_of, or asOf as the evaluation object spells it
    evaluation = api.evaluate(data, request.args.get("as_of", request.args.get("asOf")), principal)
    get_logger().info("evaluation", channel="rest", triage=evaluation["triage"],
                      recommendations=len(evaluation["recommendations"]), alerts=len(evaluation["alerts"]),
                      firings=len(evaluation["firings"]),
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))
    if request.accept_mimetypes.best_match([JSON, FHIR_JSON], default=JSON) == FHIR_JSON:
        return respond(api.guidance_response(evaluation, g.get("request_id")), mimetype=FHIR_JSON)
    return respond(evaluation)


@bp.get("/rulesets")
def rulesets() -> Response:
    caller()
    return respond(runtime().api.rulesets())


@bp.get("/healthz")
def healthz() -> Response:
    return respond({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    rt = runtime()
    checks: dict[str, str] = {"ruleset": f"{rt.api.ruleset.name} {rt.api.ruleset.version}"}
    ready = True
    if rt.authenticator is not None:
        ok = bool(rt.services.replay.ping())
        checks["replay_store"] = "ok" if ok else "unavailable"
        ready &= ok
    ping = getattr(rt.services.audit, "ping", None)
    if callable(ping):
        try:
            ok = bool(ping())
        except Exception:  # noqa: BLE001 - a failing probe means "not ready", nothing more
            ok = False
        checks["audit_store"] = "ok" if ok else "unavailable"
        ready &= ok
    if not ready:
        error = CdsError("not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items() if v == "unavailable"))
        error.status, error.issue_code = 503, "transient"
        raise error
    return respond({"status": "ready", "checks": checks})


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = runtime().metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    # /fhir and /worklist are described only when served (they need the audit database)
    return respond(openapi.document(runtime().config.public_base_url, intake="cds_intake" in current_app.extensions))
