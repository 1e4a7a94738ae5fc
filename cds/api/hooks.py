"""CDS Hooks 2.0 endpoints: discovery, service calls, feedback."""

from __future__ import annotations

import time

from flask import Blueprint, Response

from cds.api.http import caller, json_body, respond, runtime
from cds.api.logs import get_logger
from cds.api.service import discovery

bp = Blueprint("hooks", __name__)


@bp.get("/cds-services")
def services() -> Response:
    caller()
    return respond(discovery())


@bp.post("/cds-services/<service_id>")
def call(service_id: str) -> Response:
    principal = caller()
    data = json_body()
    started = time.perf_counter()
    answer = runtime().api.call_hook(service_id, data, principal)
    cards = answer["cards"]
    get_logger().info("cards", service=service_id, cards=len(cards),
                      critical=sum(c["indicator"] == "critical" for c in cards),
                      warning=sum(c["indicator"] == "warning" for c in cards),
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))
    return respond(answer)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    principal = caller()
    answer = runtime().api.feedback(service_id, json_body(), principal)
    get_logger().info("feedback", service=service_id, recorded=len(answer["recorded"]))
    return respond(answer)
