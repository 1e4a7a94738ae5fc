"""The OpenAPI 3.1 document, generated from the schemas that validate requests
(cds.api.schemas) and the service catalogue, so the two cannot drift."""

from __future__ import annotations

from typing import Any

import cds
from cds.api import schemas
from cds.api.service import SERVICES
from cds.fhir import MAX_BODY_BYTES

JSON = "application/json"
FHIR_JSON = "application/fhir+json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {FHIR_JSON: {"schema": schemas.OPERATION_OUTCOME}}}


def _body(schema: dict[str, Any], *types: str) -> dict[str, Any]:
    return {"required": True, "content": {t: {"schema": schema} for t in (types or (JSON,))}}


_COMMON_ERRORS = {
    "400": _error("Malformed JSON, or a request that breaks the schema; diagnostics name the place"),
    "401": _error("Missing or bad bearer token (no further detail, on purpose)"),
    "405": _error("Method not allowed"),
    "413": _error(f"Body over {MAX_BODY_BYTES} bytes"),
    "415": _error("Content-Type is not application/json or application/fhir+json"),
    "500": _error("Internal failure; nothing of it is shown, it was logged"),
    "503": _error("The audit store or replay store is unavailable: the service does not answer unrecorded"),
}

_SECURED: list[dict[str, list[str]]] = [{"cdsHooksJwt": []}]


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


_ETAG = _header('The version, weak: W/"3"', {"type": "string", "pattern": r'^W/"\d+"$'})
_LOCATION = _header("Absolute URL of the version written: {base}/fhir/{type}/{id}/_history/{version}",
                    {"type": "string", "minLength": 1})
_LAST_MODIFIED = _header("When the version was written (FHIR instant, UTC)", {"type": "string", "minLength": 1})


_EXAMPLE_PATIENT = {"resourceType": "Patient", "id": "pat-42", "birthDate": "1968-03-14", "gender": "male"}
_EXAMPLE_OBSERVATION = {"resourceType": "Observation", "id": "sciatica-1", "status": "final",
                        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "23056005"}]},
                        "subject": {"reference": "Patient/pat-42"}, "effectiveDateTime": "2026-11-12",
                        "valueBoolean": True}
_EXAMPLES: dict[str, dict[str, Any]] = {"Patient": _EXAMPLE_PATIENT, "Observation": _EXAMPLE_OBSERVATION}
_EXAMPLE_TRANSACTION = {"resourceType": "Bundle", "type": "transaction", "entry": [
    {"resource": _EXAMPLE_PATIENT, "request": {"method": "PUT", "url": "Patient/pat-42"}},
    {"resource": _EXAMPLE_OBSERVATION, "request": {"method": "PUT", "url": "Observation/sciatica-1"}}]}
_EXAMPLE_SUBSCRIPTION = {"resourceType": "Subscription", "status": "requested", "criteria": "Patient?triage=urgent",
                         "channel": {"type": "rest-hook", "endpoint": "https://pager.example.org/hook",
                                     "payload": "application/fhir+json",
                                     "header": ["Authorization: Bearer pager-token"]}}


def _example(body: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {**body, "content": {t: {**media, "example": example} for t, media in body["content"].items()}}


def _intake_paths() -> dict[str, Any]:
    """``/fhir`` and ``/worklist`` (cds.intake.http; the flow is in docs/intake.md).

    The intake validates in code, not with a schema; what is described here is built from its
    constants (types, id pattern, entry limit, Subscription statuses) so the two cannot drift.
    """
    # Imported here: cds.intake builds on cds.api, and only this document needs it at this layer.
    # private names used: _ETAG, _HEADER, _STATUSES are the one definition of what the intake accepts
    from cds.intake import notify, subscriptions
    from cds.intake import requests as rq

    id_pattern = rq.FHIR_ID.pattern
    common = {code: _COMMON_ERRORS[code] for code in ("400", "401", "405", "413", "415", "500", "503")}
    write_errors = {
        **common,
        "409": _error("The id holds other content (a create; use PUT), the resource belongs to another patient's "
                      "record, or concurrent posts for the patient kept changing it"),
        "412": _error("If-Match names a version that is not the current one, or If-None-Exist matches several"),
        "413": _error(f"Body over {MAX_BODY_BYTES} bytes, or the patient's record would exceed its resource limit"),
        "422": _error("Valid FHIR this server cannot keep: no subject/patient reference, a patient not on record "
                      "(post the Patient first)"),
        "503": _error("The record or the audit store is unavailable: nothing of the post was stored"),
    }
    read_errors = {code: common[code] for code in ("400", "401", "405", "500", "503")}
    if_match = {"name": "If-Match", "in": "header", "required": False, "description": 'Version check: W/"3"',
                "schema": {"type": "string", "pattern": rq._ETAG.pattern}}
    if_none_exist = {"name": "If-None-Exist", "in": "header", "required": False,
                     "description": "Conditional create: identifier=system|value and/or _id=x (400 otherwise)",
                     "schema": {"type": "string", "minLength": 1}}
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": id_pattern}}

    def written(rtype: str, created: str) -> dict[str, Any]:
        content = {FHIR_JSON: {"schema": schemas.stored_resource(rtype)}}
        headers = {"Location": _LOCATION, "ETag": _ETAG, "Last-Modified": _LAST_MODIFIED}
        return {"201": {"description": created, "headers": headers, "content": content},
                "200": {"description": "Updated, or the same content already on record (same version), or the "
                                       "match of If-None-Exist", "headers": headers, "content": content}}

    paths: dict[str, Any] = {"/fhir": {"post": {
        "summary": "Post a transaction (all or nothing) or batch (each entry alone) Bundle",
        "description": "Entries are POST Type or PUT Type/id. A transaction is refused whole at its first bad "
                       "entry; a batch answers each entry in its place. Types the rules do not read are "
                       "answered 200 with an informational outcome and not stored. See docs/intake.md.",
        "operationId": "intake_bundle", "security": _SECURED,
        "requestBody": _example(_body(schemas.intake_bundle(rq.READ_TYPES, id_pattern, rq.MAX_ENTRIES), JSON,
                                      FHIR_JSON), _EXAMPLE_TRANSACTION),
        "responses": {"200": {"description": "transaction-response or batch-response",
                              "content": {FHIR_JSON: {"schema": schemas.BUNDLE_RESPONSE}}},
                      **write_errors},
    }}}
    for rtype in rq.READ_TYPES:
        holder = None if rtype == "Patient" else ("patient" if rtype == "Device" else "subject")
        body = _body(schemas.intake_resource(rtype, id_pattern, holder=holder), JSON, FHIR_JSON)
        if rtype in _EXAMPLES:
            body = _example(body, _EXAMPLES[rtype])
        found = {"description": "The version on record",
                 "content": {FHIR_JSON: {"schema": schemas.stored_resource(rtype)}}}
        op = rtype[0].lower() + rtype[1:]
        paths[f"/fhir/{rtype}"] = {"post": {
            "summary": f"Create a {rtype} (its own id is kept when it has one; If-None-Exist honoured)",
            "operationId": f"intake_create_{op}", "security": _SECURED,
            "parameters": [if_none_exist], "requestBody": body,
            "responses": {**written(rtype, "Created"), **write_errors},
        }}
        paths[f"/fhir/{rtype}/{{id}}"] = {
            "put": {"summary": f"Create or update {rtype}/{{id}} (If-Match honoured)",
                    "operationId": f"intake_put_{op}", "security": _SECURED,
                    "parameters": [rid, if_match], "requestBody": body,
                    "responses": {**written(rtype, "Created"), **write_errors}},
            "get": {"summary": f"Read {rtype}/{{id}} as on record", "operationId": f"intake_read_{op}",
                    "security": _SECURED, "parameters": [rid],
                    "responses": {"200": {**found, "headers": {"ETag": _ETAG}},
                                  "404": _error("Not on record"), **read_errors}},
        }
        paths[f"/fhir/{rtype}/{{id}}/_history/{{vid}}"] = {"get": {
            "summary": f"Read one version of {rtype}/{{id}}", "operationId": f"intake_vread_{op}",
            "security": _SECURED,
            "parameters": [rid, {"name": "vid", "in": "path", "required": True, "description": "1-9 digits",
                                 "schema": {"type": "string", "pattern": f"^{rq.DIGITS.pattern}$"}}],
            "responses": {"200": found, "404": _error("No such version on record"), **read_errors},
        }}
    others = {"type": "string", "pattern": r"^[A-Za-z]{1,64}$", "not": {"enum": [*rq.READ_TYPES, "Subscription"]}}
    other_type = {"name": "type", "in": "path", "required": True, "schema": others,
                  "description": "Any other type: the record keeps only the types the rules read"}
    refused = {"404": _error("A FHIR type the rules do not read (not-supported)"),
               "400": _error("Not a FHIR R4 resource type, or a malformed body")}
    paths["/fhir/{type}"] = {"post": {
        "summary": "Types the record does not keep: refused", "operationId": "intake_create_other",
        "security": _SECURED, "parameters": [other_type], "requestBody": _body(schemas.FHIR_RESOURCE, JSON, FHIR_JSON),
        "responses": {**{c: common[c] for c in ("401", "405", "413", "415", "500")}, **refused},
    }}
    paths["/fhir/{type}/{id}"] = {
        "put": {"summary": "Types the record does not keep: refused", "operationId": "intake_put_other",
                "security": _SECURED, "parameters": [other_type, rid],
                "requestBody": _body(schemas.FHIR_RESOURCE, JSON, FHIR_JSON),
                "responses": {**{c: common[c] for c in ("401", "405", "413", "415", "500")}, **refused}},
        "get": {"summary": "Types the record does not keep: never on record", "operationId": "intake_read_other",
                "security": _SECURED, "parameters": [other_type, rid],
                "responses": {"404": _error("Not on record"), **read_errors}},
    }
    sub_body = _example(_body(schemas.subscription(subscriptions._STATUSES, id_pattern, notify._HEADER.pattern),
                              JSON, FHIR_JSON), _EXAMPLE_SUBSCRIPTION)
    sub_content = {FHIR_JSON: {"schema": schemas.stored_resource("Subscription")}}
    sub_headers = {"Location": _LOCATION, "ETag": _ETAG}
    sub_written = {"201": {"description": "Registered (channel.header values masked)", "headers": sub_headers,
                           "content": sub_content},
                   "200": {"description": "Replaced", "headers": sub_headers, "content": sub_content}}
    sub_errors = {**common,
                  "412": _error("If-Match names a version that is not the current one"),
                  "422": _error("An endpoint or header this server will not send to: plain http off loopback, "
                                "credentials in the URL, no header while notifications are unsigned")}
    paths["/fhir/Subscription"] = {"post": {
        "summary": "Register a rest-hook Subscription: notified when a patient's triage rises to urgent/emergency",
        "operationId": "intake_subscribe", "security": _SECURED, "parameters": [if_match], "requestBody": sub_body,
        "responses": {**sub_written, **sub_errors},
    }}
    paths["/fhir/Subscription/{id}"] = {
        "put": {"summary": "Create or replace a Subscription", "operationId": "intake_put_subscription",
                "security": _SECURED, "parameters": [rid, if_match], "requestBody": sub_body,
                "responses": {**sub_written, **sub_errors}},
        "get": {"summary": "Read a Subscription (headers masked)", "operationId": "intake_read_subscription",
                "security": _SECURED, "parameters": [rid],
                "responses": {"200": {"description": "The subscription", "headers": {"ETag": _ETAG},
                                      "content": sub_content},
                              "404": _error("Not registered by this client"), **read_errors}},
    }
    paths["/worklist"] = {"get": {
        "summary": "Patients whose suggestions changed, most urgent first (this client's)",
        "operationId": "intake_worklist", "security": _SECURED,
        "parameters": [{"name": "limit", "in": "query", "required": False, "description": "default 200",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                       {"name": "all", "in": "query", "required": False,
                        "description": "1 or true: acknowledged changes too", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The worklist", "content": {JSON: {"schema": schemas.WORKLIST}}},
                      **read_errors},
    }}
    return paths


def document(base_url: str | None = None, *, intake: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint (``intake``: /fhir and /worklist are served)."""
    paths: dict[str, Any] = {
        "/cds-services": {"get": {
            "summary": "CDS Hooks discovery", "operationId": "discovery", "security": _SECURED,
            "responses": {"200": {"description": "The services", "content": {JSON: {"schema": schemas.DISCOVERY}}},
                          "401": _COMMON_ERRORS["401"], "405": _COMMON_ERRORS["405"]},
        }},
    }
    for service in SERVICES.values():
        paths[f"/cds-services/{service.id}"] = {"post": {
            "summary": f"CDS Hooks {service.hook}: {service.title}",
            "operationId": f"call_{service.id.replace('-', '_')}",
            "security": _SECURED,
            "requestBody": _body(schemas.hook_request(service.hook), JSON),
            "responses": {
                "200": {"description": "Cards", "content": {JSON: {"schema": schemas.CARDS_RESPONSE}}},
                "412": _error("Data the evaluation needs is neither in prefetch nor fetchable"),
                **_COMMON_ERRORS,
            },
        }}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": {
            "summary": f"Feedback on cards of {service.id}",
            "operationId": f"feedback_{service.id.replace('-', '_')}",
            "security": _SECURED,
            "requestBody": _body(schemas.FEEDBACK_REQUEST, JSON),
            "responses": {
                "200": {"description": "Recorded", "content": {JSON: {"schema": schemas.FEEDBACK_RESPONSE}}},
                "404": _error("A card uuid this service never issued"),
                **_COMMON_ERRORS,
            },
        }}
    paths["/evaluate"] = {"post": {
        "summary": "Evaluate one patient's FHIR Bundle (or resource, or CDS Hooks prefetch object)",
        "operationId": "evaluate", "security": _SECURED,
        "parameters": [{"name": "as_of", "in": "query", "required": False,
                        "description": "Evaluation date (default: today, UTC)",
                        "schema": {"type": "string", "format": "date"}}],
        "requestBody": _body({"type": "object"}, JSON, FHIR_JSON),
        "responses": {
            "200": {"description": "The evaluation; with Accept: application/fhir+json a GuidanceResponse",
                    "content": {JSON: {"schema": schemas.EVALUATION},
                                FHIR_JSON: {"schema": schemas.GUIDANCE_RESPONSE}}},
            **_COMMON_ERRORS,
        },
    }}
    paths["/rulesets"] = {"get": {
        "summary": "Loaded rulesets: name, version, sha256, rules", "operationId": "rulesets",
        "security": _SECURED,
        "responses": {"200": {"description": "Rulesets", "content": {JSON: {"schema": schemas.RULESETS}}},
                      "401": _COMMON_ERRORS["401"], "405": _COMMON_ERRORS["405"]},
    }}
    for path, summary, op in (("/healthz", "Liveness: the process answers", "healthz"),
                              ("/readyz", "Readiness: ruleset loaded, stores reachable", "readyz")):
        paths[path] = {"get": {
            "summary": summary, "operationId": op, "security": [],
            "responses": {"200": {"description": "OK", "content": {JSON: {"schema": schemas.STATUS}}},
                          "503": _error("Not ready"), "405": _COMMON_ERRORS["405"]},
        }}
    paths["/metrics"] = {"get": {
        "summary": "Prometheus metrics", "operationId": "metrics", "security": [],
        "responses": {"200": {"description": "Prometheus text format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      "405": _COMMON_ERRORS["405"]},
    }}
    paths["/openapi.json"] = {"get": {
        "summary": "This document", "operationId": "openapi", "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
                      "405": _COMMON_ERRORS["405"]},
    }}
    if intake:
        paths.update(_intake_paths())
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Back neuropathy CDS service", "version": cds.__version__,
                 "description": "CDS Hooks 2.0 services and a REST evaluation API. Every call to a "
                                "secured endpoint carries a CDS Hooks client JWT (ES384 or RS384) whose "
                                "aud is the URL called. Errors are FHIR OperationOutcomes."},
        "paths": paths,
        "components": {"securitySchemes": {"cdsHooksJwt": {"type": "http", "scheme": "bearer",
                                                           "bearerFormat": "JWT"}}},
    }
    if base_url:
        doc["servers"] = [{"url": base_url}]
    return doc
