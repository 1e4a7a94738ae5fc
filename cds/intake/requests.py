"""FHIR REST requests to intake operations: pure functions, no I/O.

A single ``PUT /fhir/{type}/{id}`` or ``POST /fhir/{type}`` and every entry
of a ``transaction`` or ``batch`` Bundle become one :class:`Operation`:
which resource, which id, which version check. Server-assigned ids are
given here, and references to a transaction's ``urn:uuid`` fullUrls are
rewritten to them, so what is stored is what the rules will cite.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from cds.errors import CdsError, InputError
from cds.fhir.resource_types import R4_RESOURCE_TYPES
from cds.intake.errors import TooManyEntries, Unprocessable, UnsupportedResourceType

#: the resource types the rules read (cds.fhir.normalize); the record keeps these
READ_TYPES = ("Patient", "Observation", "Condition", "MedicationStatement", "MedicationRequest", "Procedure",
              "DiagnosticReport", "Device", "ServiceRequest")
#: entries in one transaction or batch; a whole chart belongs in several posts
MAX_ENTRIES = 1000
#: always used with fullmatch: ``$`` alone also matches before a trailing newline ("p1\n" was stored, then
#: its Location header failed: a 500 after the commit)
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: a version in a URL (``_history/{vid}``) or the worklist's ``limit``: ASCII digits, whole (fullmatch)
DIGITS = re.compile(r"[0-9]{1,9}")
_ETAG = re.compile(r'^\s*(?:W/)?"?(\d{1,9})"?\s*$')
_CONDITIONAL_PARAMS = ("identifier", "_id")


@dataclass
class Operation:
    """One resource to create or update, and where it stood in the request."""

    where: str                       # "body" or "entry[3]"
    method: str                      # PUT or POST
    rtype: str
    rid: str                         # as posted, or assigned by the server
    resource: dict[str, Any]
    assigned: bool = False           # the server chose the id (POST without one)
    if_match: int | None = None
    if_none_exist: dict[str, str] | None = None
    full_url: str | None = None
    ignored: bool = False            # a type the rules do not read (in a Bundle only)
    patient_id: str = ""             # whose record it belongs to (set by resolve_patients)

    @property
    def reference(self) -> str:
        return f"{self.rtype}/{self.rid}"

    @property
    def label(self) -> str:
        return f"{self.where} {self.reference}"


@dataclass
class ParsedBundle:
    kind: str                                           # transaction or batch
    operations: list[Operation | CdsError] = field(default_factory=list)


def content_sha256(resource: dict[str, Any]) -> str:
    """What makes two posts of a resource the same: everything but ``meta`` (ours)."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_etag(value: str | None, where: str) -> int | None:
    if value is None or value == "":
        return None
    match = _ETAG.match(value)
    if not match:
        raise InputError(f'{value[:40]!r} is not a version tag such as W/"3"', where=where)
    return int(match.group(1))


def parse_if_none_exist(value: str | None, where: str) -> dict[str, str] | None:
    """``identifier=system|value`` or ``_id=x``; other search parameters are not supported."""
    if value is None or value == "":
        return None
    query = value.split("?", 1)[1] if "?" in value else value
    params = dict(parse_qsl(query, keep_blank_values=True))
    if not params or any(k not in _CONDITIONAL_PARAMS for k in params):
        raise InputError("only identifier=system|value and _id are supported in a conditional create",
                         where=where)
    if "identifier" in params and "|" not in params["identifier"]:
        raise InputError("identifier must be system|value", where=where)
    return params


def single(method: str, rtype: str, rid: str | None, body: Any, *, if_match: str | None = None,
           if_none_exist: str | None = None) -> Operation:
    """``PUT /fhir/{type}/{id}`` or ``POST /fhir/{type}``."""
    _check_type(rtype, "url", standalone=True)
    resource = _resource(body, "body", rtype)
    return _operation("body", method, rtype, rid, resource, parse_etag(if_match, "If-Match"),
                      parse_if_none_exist(if_none_exist, "If-None-Exist"), None)


def bundle(body: Any) -> ParsedBundle:
    """The operations of a transaction or batch Bundle; a transaction raises at its first bad entry,
    a batch keeps each entry's error in its place."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise InputError("POST /fhir takes a Bundle of type transaction or batch", where="body")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise InputError(f"Bundle.type must be transaction or batch, not {str(kind)[:40]!r}", where="Bundle.type")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise InputError("must be an array", where="Bundle.entry")
    if len(entries) > MAX_ENTRIES:
        raise TooManyEntries(f"{len(entries)} entries; at most {MAX_ENTRIES} per {kind}: split it",
                             where="Bundle.entry")
    parsed = ParsedBundle(kind)
    for index, entry in enumerate(entries):
        where = f"entry[{index}]"
        try:
            parsed.operations.append(_entry(entry, where))
        except CdsError as exc:
            if kind == "transaction":
                raise
            parsed.operations.append(exc)
    ops = [o for o in parsed.operations if isinstance(o, Operation)]
    if kind == "transaction":
        _check_unique(ops)
        _rewrite_references(ops)
    return parsed


def _entry(entry: Any, where: str) -> Operation:
    if not isinstance(entry, dict):
        raise InputError("a Bundle entry must be an object", where=where)
    request = entry.get("request")
    if not isinstance(request, dict):
        raise InputError("entry.request (method and url) is required in a transaction or batch", where=where)
    method, url = request.get("method"), request.get("url")
    if method not in ("POST", "PUT"):
        raise InputError(f"method {str(method)[:10]!r} is not supported here: POST or PUT (to withdraw a "
                         "resource, PUT it with status entered-in-error)", where=f"{where}.request.method")
    if not isinstance(url, str) or not url:
        raise InputError("must be Type or Type/id", where=f"{where}.request.url")
    path = url.split("?", 1)[0].strip("/")
    if "?" in url:
        raise InputError("conditional updates are not supported; use ifNoneExist on a POST",
                         where=f"{where}.request.url")
    parts = path.split("/")
    rtype = parts[0]
    if method == "POST" and len(parts) != 1 or method == "PUT" and len(parts) != 2:
        raise InputError(f"{method} takes {'Type' if method == 'POST' else 'Type/id'}", where=f"{where}.request.url")
    ignored = _check_type(rtype, f"{where}.request.url", standalone=False)
    resource = _resource(entry.get("resource"), f"{where}.resource", rtype)
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise InputError("fullUrl must be a string", where=where)
    op = _operation(where, method, rtype, parts[1] if method == "PUT" else None, resource,
                    parse_etag(request.get("ifMatch"), f"{where}.request.ifMatch"),
                    parse_if_none_exist(request.get("ifNoneExist"), f"{where}.request.ifNoneExist"), full_url)
    op.ignored = ignored
    return op


def _check_type(rtype: str, where: str, *, standalone: bool) -> bool:
    """True when the type is valid FHIR but not read by the rules (ignored inside a Bundle)."""
    if rtype == "Subscription":
        if standalone:
            return False
        raise InputError("register subscriptions with POST /fhir/Subscription, not inside a Bundle", where=where)
    if rtype not in R4_RESOURCE_TYPES:
        raise InputError(f"unknown resource type {rtype[:64]!r}", where=where)
    if rtype in READ_TYPES:
        return False
    if standalone:
        raise UnsupportedResourceType(f"{rtype} is not read by the rules; this server keeps "
                                      f"{', '.join(READ_TYPES)}", where=where)
    return True


def _resource(value: Any, where: str, rtype: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError("a FHIR resource (a JSON object) is required", where=where)
    if value.get("resourceType") != rtype:
        raise InputError(f"resourceType {str(value.get('resourceType'))[:64]!r} does not match the url "
                         f"type {rtype}", where=where)
    if "meta" in value and not isinstance(value["meta"], dict):  # the server merges its versionId into it
        raise InputError("meta must be an object", where=f"{where}.meta")
    return dict(value)


def _operation(where: str, method: str, rtype: str, rid: str | None, resource: dict[str, Any],
               if_match: int | None, if_none_exist: dict[str, str] | None, full_url: str | None) -> Operation:
    body_id = resource.get("id")
    if body_id is not None and (not isinstance(body_id, str) or not FHIR_ID.fullmatch(body_id)):
        raise InputError("id must be 1-64 letters, digits, '-' or '.'", where=f"{where} {rtype}.id")
    assigned = False
    if method == "PUT":
        if rid is None or not FHIR_ID.fullmatch(rid):
            raise InputError("the url id must be 1-64 letters, digits, '-' or '.'", where=where)
        if body_id is not None and body_id != rid:
            raise InputError(f"resource id {body_id!r} is not the url id {rid!r}", where=f"{where} {rtype}.id")
        if if_none_exist is not None:
            raise InputError("ifNoneExist belongs to a POST", where=where)
    else:
        if if_match is not None:
            raise InputError("If-Match belongs to a PUT", where=where)
        # The EHR's own id is kept: the rules cite resources by the ids the EHR knows.
        rid = body_id
        if rid is None:
            rid, assigned = str(uuid.uuid4()), True
    resource["id"] = rid
    return Operation(where, method, rtype, rid, resource, assigned, if_match, if_none_exist, full_url)


def _check_unique(ops: list[Operation]) -> None:
    seen: dict[str, str] = {}
    for op in ops:
        if op.reference in seen and not op.assigned:
            raise InputError(f"{op.reference} appears twice in one transaction (also at {seen[op.reference]})",
                             where=op.where)
        seen[op.reference] = op.where


def _rewrite_references(ops: list[Operation]) -> None:
    """``urn:uuid:`` fullUrls of this transaction become the stored Type/id in every reference."""
    targets = {op.full_url: op.reference for op in ops if op.full_url and op.full_url.startswith("urn:")}
    if not targets:
        return

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in targets:
                out["reference"] = targets[ref]
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    for op in ops:
        op.resource = walk(op.resource)


def patient_of(op: Operation) -> str:
    """The id of the patient whose record the resource joins."""
    if op.rtype == "Patient":
        return op.rid
    holder = op.resource.get("subject") if op.rtype != "Device" else op.resource.get("patient")
    holder = holder or op.resource.get("subject") or op.resource.get("patient")
    ref = holder.get("reference") if isinstance(holder, dict) else None
    field_name = "patient" if op.rtype == "Device" else "subject"
    if not isinstance(ref, str) or not ref:
        raise Unprocessable(f"{field_name}.reference is required: every resource belongs to one patient's "
                            "record", where=op.label)
    parts = [p for p in ref.split("?", 1)[0].split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) < 2 or parts[-2] != "Patient" or not FHIR_ID.fullmatch(parts[-1]):
        raise Unprocessable(f"{field_name}.reference {ref[:80]!r} does not name a Patient (Patient/id)",
                            where=op.label)
    return parts[-1]


def identifiers(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(system, value) of Resource.identifier, for conditional create."""
    out = []
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            system = ident.get("system")
            out.append((system[:512] if isinstance(system, str) else "", ident["value"][:512]))
    return sorted(set(out))
