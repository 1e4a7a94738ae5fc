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


def document(base_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every endpoint."""
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
