"""The HTTP floor: a bare Flask endpoint under the same gunicorn settings.

It parses the same request body and answers a JSON body of the same size as
the service's answer (``CDS_BENCH_ANSWER_BYTES``), and nothing else: the
difference from the service is everything the service does per call (JWT,
FHIR intake, rules, cards, audit record, metrics, logs).
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request


def create_app() -> Flask:
    size = int(os.environ.get("CDS_BENCH_ANSWER_BYTES", "2000"))
    app = Flask("bare")
    empty = len(json.dumps({"cards": [], "parsed": 0, "padding": ""}))

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        parsed = len(json.loads(request.get_data()))
        answer = json.dumps({"cards": [], "parsed": parsed,
                             "padding": "x" * max(0, size - empty - len(str(parsed)) + 1)})
        return Response(answer, mimetype="application/json")

    @app.get("/readyz")
    def ready() -> Response:
        return Response("{}", mimetype="application/json")

    return app
