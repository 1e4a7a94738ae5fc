"""JSON Schemas (2020-12) of every request and response body.

One definition serves three uses: requests are validated against it
(:func:`validate`), ``/openapi.json`` is generated from it, and the tests
check every response against it. Request schemas check the envelope (what
CDS Hooks and this service require); the FHIR resources inside are checked
field by field by the FHIR layer (cds.fhir), which names entry and field.
No Flask here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds.errors import InputError, MalformedJson

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
#: "Type/id" as CDS Hooks uses for userId and selections.
TYPED_REFERENCE = r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$"
HOOKS = ("patient-view", "order-select", "order-sign")

CODING: dict[str, Any] = {
    "type": "object",
    "properties": {
        "system": {"type": "string", "minLength": 1, "maxLength": 1024},
        "code": {"type": "string", "minLength": 1, "maxLength": 256},
        "display": {"type": "string", "minLength": 1, "maxLength": 1024},
    },
    "required": ["code"],
}

FHIR_RESOURCE: dict[str, Any] = {
    "type": "object",
    "properties": {"resourceType": {"type": "string", "pattern": "^[A-Z][A-Za-z]{1,63}$"}},
    "required": ["resourceType"],
}

BUNDLE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"type": "string"},
        "entry": {"type": "array", "items": {
            "type": "object",
            "properties": {"fullUrl": {"type": "string"}, "resource": FHIR_RESOURCE},
        }},
    },
    "required": ["resourceType"],
}

OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "properties": {
                "severity": {"enum": ["fatal", "error", "warning", "information"]},
                "code": {"type": "string", "minLength": 1},
                "diagnostics": {"type": "string", "minLength": 1},
                "expression": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["severity", "code", "diagnostics"],
        }},
    },
    "required": ["resourceType", "issue"],
}

FHIR_AUTHORIZATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string", "minLength": 1, "maxLength": 8192},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer", "minimum": 0},
        "scope": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "patient": {"type": "string", "pattern": FHIR_ID},
    },
    "required": ["access_token", "token_type", "expires_in", "scope", "subject"],
}

_BASE_CONTEXT: dict[str, Any] = {
    "userId": {"type": "string", "pattern": TYPED_REFERENCE},
    "patientId": {"type": "string", "pattern": FHIR_ID},
    "encounterId": {"type": "string", "pattern": FHIR_ID},
}

CONTEXTS: dict[str, dict[str, Any]] = {
    "patient-view": {
        "type": "object",
        "properties": dict(_BASE_CONTEXT),
        "required": ["userId", "patientId"],
    },
    "order-select": {
        "type": "object",
        "properties": {**_BASE_CONTEXT,
                       "selections": {"type": "array", "minItems": 1,
                                      "items": {"type": "string", "pattern": TYPED_REFERENCE}},
                       "draftOrders": BUNDLE},
        "required": ["userId", "patientId", "selections", "draftOrders"],
    },
    "order-sign": {
        "type": "object",
        "properties": {**_BASE_CONTEXT, "draftOrders": BUNDLE},
        "required": ["userId", "patientId", "draftOrders"],
    },
}


def hook_request(hook: str) -> dict[str, Any]:
    """The CDS Hooks 2.0 request body for one hook."""
    return {
        "type": "object",
        "properties": {
            "hook": {"const": hook},
            "hookInstance": {"type": "string", "minLength": 1, "maxLength": 128},
            "fhirServer": {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048},
            "fhirAuthorization": FHIR_AUTHORIZATION,
            "context": CONTEXTS[hook],
            "prefetch": {"type": "object", "additionalProperties": {
                "anyOf": [{"type": "null"}, FHIR_RESOURCE]}},
            "extension": {"type": "object"},
        },
        "required": ["hook", "hookInstance", "context"],
        "additionalProperties": False,
        "dependentRequired": {"fhirAuthorization": ["fhirServer"]},
    }


LINK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "url": {"type": "string", "minLength": 1},
        "type": {"enum": ["absolute", "smart"]},
        "appContext": {"type": "string", "minLength": 1},
    },
    "required": ["label", "url", "type"],
    "additionalProperties": False,
}

ACTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"enum": ["create", "update", "delete"]},
        "description": {"type": "string", "minLength": 1},
        "resource": {**FHIR_RESOURCE, "required": ["resourceType", "id"]},
        "resourceId": {"type": "string", "pattern": TYPED_REFERENCE},
    },
    "required": ["type", "description"],
    "additionalProperties": False,
    "allOf": [
        {"if": {"properties": {"type": {"const": "create"}}}, "then": {"required": ["resource"]}},
        {"if": {"properties": {"type": {"const": "delete"}}}, "then": {"required": ["resourceId"]}},
    ],
}

SUGGESTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "uuid": {"type": "string", "format": "uuid"},
        "isRecommended": {"type": "boolean"},
        "actions": {"type": "array", "minItems": 1, "items": ACTION},
    },
    "required": ["label", "uuid", "actions"],
    "additionalProperties": False,
}

CARD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "format": "uuid"},
        "summary": {"type": "string", "minLength": 1, "maxLength": 140},
        "detail": {"type": "string", "minLength": 1},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "url": {"type": "string", "minLength": 1},
                "icon": {"type": "string", "minLength": 1},
                "topic": {**CODING, "required": ["system", "code", "display"]},
            },
            "required": ["label"],
            "additionalProperties": False,
        },
        "suggestions": {"type": "array", "minItems": 1, "items": SUGGESTION},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "minItems": 1,
                            "items": {**CODING, "required": ["system", "code", "display"]}},
        "links": {"type": "array", "minItems": 1, "items": LINK},
    },
    "required": ["uuid", "summary", "indicator", "source", "detail"],
    "additionalProperties": False,
    "dependentRequired": {"suggestions": ["selectionBehavior"]},
}

CARDS_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {"cards": {"type": "array", "items": CARD}},
    "required": ["cards"],
    "additionalProperties": False,
}

DISCOVERY: dict[str, Any] = {
    "type": "object",
    "properties": {"services": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "hook": {"enum": list(HOOKS)},
            "title": {"type": "string", "minLength": 1},
            "description": {"type": "string", "minLength": 1},
            "id": {"type": "string", "pattern": "^[a-z0-9-]+$"},
            "prefetch": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
            "usageRequirements": {"type": "string", "minLength": 1},
        },
        "required": ["hook", "description", "id"],
        "additionalProperties": False,
    }}},
    "required": ["services"],
}

FEEDBACK_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {"feedback": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
        "type": "object",
        "properties": {
            "card": {"type": "string", "minLength": 1, "maxLength": 128},
            "outcome": {"enum": ["accepted", "overridden"]},
            "acceptedSuggestions": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
                "type": "object",
                "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 128}},
                "required": ["id"],
            }},
            "overrideReason": {
                "type": "object",
                "properties": {"reason": CODING,
                               "userComment": {"type": "string", "maxLength": 4000}},
            },
            "outcomeTimestamp": {"type": "string", "format": "date-time",
                                 "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"},
        },
        "required": ["card", "outcome", "outcomeTimestamp"],
        "allOf": [
            {"if": {"properties": {"outcome": {"const": "accepted"}}},
             "then": {"required": ["acceptedSuggestions"], "not": {"required": ["overrideReason"]}}},
            {"if": {"properties": {"outcome": {"const": "overridden"}}},
             "then": {"not": {"required": ["acceptedSuggestions"]}}},
        ],
    }}},
    "required": ["feedback"],
    "additionalProperties": False,
}

FEEDBACK_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {"recorded": {"type": "array", "items": {
        "type": "object",
        "properties": {"card": {"type": "string"}, "id": {"type": "string"}},
        "required": ["card", "id"],
    }}},
    "required": ["recorded"],
}

#: One node of the derivation tree; deeper levels have the same shape
#: (left open here so the schema needs no recursive reference).
_BECAUSE: dict[str, Any] = {
    "type": "object",
    "properties": {"fact": {"type": "string"}, "type": {"type": "string"}, "label": {"type": "string"},
                   "resource": {"type": "string"}, "rule": {"type": ["string", "null"]},
                   "because": {"type": "array", "items": {"type": "object"}}},
    "required": ["fact", "type", "label"],
}

_GUIDELINE: dict[str, Any] = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "label": {"type": "string"}, "url": {"type": "string"}},
    "required": ["label", "url"],
}

_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "action": {"type": "string"}, "category": {"type": "string"},
        "urgency": {"enum": ["emergency", "urgent", "routine", "self-care"]},
        "title": {"type": "string"}, "rationale": {"type": "string"}, "rule": {"type": "string"},
        "guideline": _GUIDELINE, "guidelines": {"type": "array", "items": _GUIDELINE},
        "evidence": {"type": "array", "items": {"type": "string"}},
        "because": {"type": "array", "items": _BECAUSE},
        "codes": {"type": "array", "items": CODING},
    },
    "required": ["id", "action", "category", "urgency", "title", "rationale", "rule", "guideline",
                 "evidence", "because"],
}

EVALUATION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "patient": {"type": ["string", "null"]},
        "asOf": {"type": "string", "format": "date"},
        "triage": {"enum": ["emergency", "urgent", "routine", "self-care", "none"]},
        "recommendations": {"type": "array", "items": _ITEM},
        "alerts": {"type": "array", "items": _ITEM},
        "ruleset": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"}},
            "required": ["name", "version", "sha256"]},
        "firings": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["patient", "asOf", "triage", "recommendations", "alerts", "ruleset", "firings"],
}

GUIDANCE_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resourceType": {"const": "GuidanceResponse"},
        "id": {"type": "string"},
        "moduleUri": {"type": "string", "minLength": 1},
        "status": {"enum": ["success", "data-requested", "data-required", "in-progress", "failure",
                            "entered-in-error"]},
        "contained": {"type": "array", "items": FHIR_RESOURCE},
        "result": {"type": "object", "properties": {"reference": {"type": "string"}}},
    },
    "required": ["resourceType", "moduleUri", "status"],
}

RULESETS: dict[str, Any] = {
    "type": "object",
    "properties": {"rulesets": {"type": "array", "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"},
            "title": {"type": "string"},
            "modules": {"type": "object"},
            "rules": {"type": "array", "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "module": {"type": "string"},
                               "title": {"type": "string"}},
                "required": ["id", "module", "title"]}},
        },
        "required": ["name", "version", "sha256", "rules"],
    }}},
    "required": ["rulesets"],
}

STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "checks": {"type": "object"}},
    "required": ["status"],
}


#: Deeper JSON is refused: FHIR resources nest a dozen levels or so, and
#: every later step (validation, hashing, the audit record) recurses.
MAX_JSON_DEPTH = 100


def check_depth(data: Any) -> None:
    """MalformedJson when ``data`` nests deeper than MAX_JSON_DEPTH (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise MalformedJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


_PATTERNS = {
    FHIR_ID: "is not a FHIR id (letters, digits, '-' and '.', at most 64; no 'Type/' prefix)",
    TYPED_REFERENCE: "is not a relative reference 'Type/id'",
}
_validators: dict[int, Draft202012Validator] = {}


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    key = id(schema)
    validator = _validators.get(key)
    if validator is None:
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        _validators[key] = validator
    return validator


def where(path: Iterable[Any]) -> str:
    """A JSON path in the style the FHIR layer uses: ``context.draftOrders.entry[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validate(schema: dict[str, Any], data: Any) -> None:
    """Raise InputError naming the offending place when ``data`` breaks ``schema``."""
    error = best_match(_validator(schema).iter_errors(data))
    if error is None:
        return
    raise InputError(_message(error), where=where(error.absolute_path))


def _message(error: ValidationError) -> str:
    if error.validator == "additionalProperties":
        return "unexpected field(s): " + error.message.split("(", 1)[-1].rstrip(")")[:200]
    if error.validator in ("pattern", "format", "const", "enum", "type", "maxLength", "minLength"):
        shown = repr(error.instance)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if "fhirAuthorization" in error.absolute_path:
            shown = "the value"  # never echo a credential, not even to its sender
        value = error.validator_value
        if error.validator == "pattern":
            rule = _PATTERNS.get(value, f"does not match {value}")
        elif error.validator == "format":
            rule = f"is not a valid {value}"
        elif error.validator == "const":
            rule = f"must be {value!r}"
        elif error.validator == "enum":
            rule = "must be one of " + ", ".join(map(repr, value))
        elif error.validator == "type":
            rule = f"must be of type {value}"
        elif error.validator == "maxLength":
            rule = f"is longer than {value} characters"
        else:
            rule = "must not be empty"
        return f"{shown} {rule}"
    return error.message[:300]


# -- The observation intake (/fhir, /worklist; docs/intake.md) -------------------------------
#
# The intake validates in code (cds.intake.requests and cds.intake.subscriptions: each check names
# its entry and field, and some outcomes, such as an unknown patient, depend on the record). The
# schemas below describe those checks for /openapi.json and are built from the intake's own
# constants (passed in by cds.api.openapi), so the id pattern, the supported types, methods and
# entry limit have one definition. They are not used to validate; the code is the authority.

#: The triages an evaluation can reach (cds.intake.diff orders them).
TRIAGES = ("emergency", "urgent", "routine", "self-care", "none")


def intake_resource(rtype: str, id_pattern: str, *, holder: str | None) -> dict[str, Any]:
    """A posted FHIR resource of one type, as cds.intake.requests checks it (400 otherwise).

    ``holder`` names the reference to the patient (``subject``, or ``patient`` for a Device): it is
    needed to store the resource, but its absence is a 422 (a server rule), not a malformed request.
    """
    properties: dict[str, Any] = {"resourceType": {"const": rtype},
                                  "id": {"type": "string", "pattern": id_pattern}}
    if holder is not None:
        properties[holder] = {"type": "object", "properties": {"reference": {"type": "string"}}}
    return {"type": "object", "properties": properties, "required": ["resourceType"]}


def intake_bundle(types: Iterable[str], id_pattern: str, max_entries: int) -> dict[str, Any]:
    """``POST /fhir``: a transaction or batch Bundle of POST (``Type``) and PUT (``Type/id``) entries.

    Any R4 type may appear (those the rules do not read are answered "not stored"), so ``url`` is
    described by its shape; ``types`` are those the record keeps.
    """
    url = "^(" + "|".join(types) + r"|[A-Z][A-Za-z]{1,63})(/" + id_pattern.strip("^$") + ")?$"
    return {
        "type": "object",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["transaction", "batch"]},
            "entry": {"type": "array", "maxItems": max_entries, "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": FHIR_RESOURCE,
                    "request": {
                        "type": "object",
                        "properties": {"method": {"enum": ["POST", "PUT"]},
                                       "url": {"type": "string", "pattern": url},
                                       "ifMatch": {"type": "string"}, "ifNoneExist": {"type": "string"}},
                        "required": ["method", "url"],
                    },
                },
                "required": ["request", "resource"],
            }},
        },
        "required": ["resourceType", "type"],
    }


def stored_resource(rtype: str) -> dict[str, Any]:
    """A resource as the record holds it: the posted one with the server's ``meta``."""
    return {"type": "object",
            "properties": {"resourceType": {"const": rtype}, "id": {"type": "string", "minLength": 1},
                           "meta": {"type": "object",
                                    "properties": {"versionId": {"type": "string", "pattern": r"^\d+$"},
                                                   "lastUpdated": {"type": "string", "minLength": 1}},
                                    "required": ["versionId", "lastUpdated"]}},
            "required": ["resourceType", "id", "meta"]}


def subscription(statuses: Iterable[str], id_pattern: str, header_pattern: str) -> dict[str, Any]:
    """``POST``/``PUT /fhir/Subscription``: an R4 Subscription with a rest-hook channel."""
    return {
        "type": "object",
        "properties": {
            "resourceType": {"const": "Subscription"},
            "id": {"type": "string", "pattern": id_pattern},
            "status": {"enum": list(statuses)},
            "criteria": {"type": "string", "minLength": 1},
            "channel": {
                "type": "object",
                "properties": {
                    "type": {"const": "rest-hook"},
                    "endpoint": {"type": "string", "maxLength": 2048, "pattern": "^https?://[^/@:]+(:[0-9]{1,5})?/",
                                 "description": "https, or plain http to a loopback host only; no user:password "
                                                "(else 422)"},
                    "payload": {"enum": ["application/fhir+json", "application/json"]},
                    "header": {"type": "array",
                               "items": {"type": "string", "pattern": header_pattern, "description": "Name: value"},
                               "description": "required when notifications are not signed "
                                              "(no CDS_NOTIFY_SECRET; else 422); masked on read"},
                },
                "required": ["type", "endpoint"],
            },
        },
        "required": ["resourceType", "status", "criteria", "channel"],
    }


def _entry_response(status: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"status": status, "location": {"type": "string", "minLength": 1},
                           "etag": {"type": "string", "pattern": r'^W/"\d+"$'},
                           "lastModified": {"type": "string", "minLength": 1}, "outcome": OPERATION_OUTCOME},
            "required": ["status"]}


#: The answer to ``POST /fhir``: one entry per posted entry, in order.
BUNDLE_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["transaction-response", "batch-response"]},
        "entry": {"type": "array", "items": {
            "type": "object",
            "properties": {"fullUrl": {"type": "string"},
                           "response": _entry_response({"type": "string", "pattern": r"^\d{3} "})},
            "required": ["response"],
        }},
    },
    "required": ["resourceType", "type", "entry"],
}

_WORKLIST_CARD: dict[str, Any] = {
    "type": "object",
    "properties": {"uuid": {"type": "string", "format": "uuid"}, "summary": {"type": "string"},
                   "indicator": {"enum": ["info", "warning", "critical"]}, "acknowledged": {"type": "boolean"},
                   "feedback": {"type": "array", "items": {"enum": ["accepted", "overridden"]}}},
    "required": ["uuid", "summary", "indicator", "acknowledged", "feedback"],
}

#: ``GET /worklist``: patients whose suggestions changed, most urgent first (docs/intake.md).
WORKLIST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "patients": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "patient": {"type": "string", "pattern": TYPED_REFERENCE},
                "triage": {"enum": list(TRIAGES)}, "urgency": {"enum": list(TRIAGES)},
                "client": {"type": "string"},
                "changes": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "evaluation": {"type": "string"}, "at": {"type": "string"},
                        "asOf": {"type": "string", "format": "date"}, "recordVersion": {"type": "integer"},
                        "triage": {"type": "object",
                                   "properties": {"before": {"enum": list(TRIAGES)}, "after": {"enum": list(TRIAGES)}},
                                   "required": ["before", "after"]},
                        "urgency": {"enum": list(TRIAGES)},
                        "new": {"type": "array", "items": {"type": "object"}},
                        "changed": {"type": "array", "items": {"type": "object"}},
                        "withdrawn": {"type": "array", "items": {"type": "object"}},
                        "acknowledged": {"type": "boolean"},
                        "cards": {"type": "array", "items": _WORKLIST_CARD},
                        "notifications": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"subscriber": {"type": "string"}, "status": {"type": "string"},
                                           "attempts": {"type": "integer"}},
                            "required": ["subscriber", "status", "attempts"]}},
                    },
                    "required": ["evaluation", "at", "asOf", "recordVersion", "triage", "urgency", "new",
                                 "changed", "withdrawn", "acknowledged", "cards", "notifications"],
                }},
            },
            "required": ["patient", "triage", "urgency", "changes"],
        }},
        "feedback": {"type": "string"},
    },
    "required": ["patients", "feedback"],
}
