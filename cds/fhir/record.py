"""From request JSON to one patient's list of resources.

Accepts a FHIR Bundle (any type, entries with or without fullUrl), a single
resource, a CDS Hooks ``prefetch`` object (values a Bundle, a resource,
null or an OperationOutcome), or a whole CDS Hooks request (its prefetch
and its ``context.draftOrders``). Limits are documented in docs/api.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cds.errors import InputError, MalformedJson, PayloadTooLarge
from cds.fhir.resource_types import R4_RESOURCE_TYPES

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_RESOURCES = 20_000


@dataclass(frozen=True)
class Entry:
    """One resource of the record and where it stood in the request."""

    where: str
    resource: dict[str, Any]
    full_url: str | None

    # Cached: a 10,000-resource record asks each entry its type a dozen
    # times. (cached_property writes the instance dict, which a frozen
    # dataclass allows.)
    @cached_property
    def type(self) -> str:
        return self.resource["resourceType"]  # type: ignore[no-any-return]

    @cached_property
    def reference(self) -> str:
        """How evidence names it: Type/id, else its fullUrl, else its place."""
        rid = self.resource.get("id")
        if isinstance(rid, str) and rid:
            return f"{self.type}/{rid}"
        return self.full_url or f"{self.type}#{self.where}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes | str, *, limit: int = MAX_BODY_BYTES) -> Any:
    """Parse a request body, refusing oversized, malformed or too-deep JSON."""
    if len(body) > limit:
        raise PayloadTooLarge(f"body of {len(body)} bytes is over the limit of {limit} bytes")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedJson("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"body is not UTF-8 text: {exc.reason}") from None
    except ValueError as exc:
        raise MalformedJson(f"malformed JSON: {exc}") from None


def iter_entries(data: Any) -> Iterator[Entry]:
    """Every resource in a request, with its place; validates the envelope."""
    if not isinstance(data, dict):
        kind = type(data).__name__ if not isinstance(data, list) else "an array"
        raise InputError(f"expected a JSON object (a FHIR Bundle or resource, or a CDS Hooks "
                         f"prefetch), got {kind}")
    if "resourceType" in data:
        yield from _resource_or_bundle(data, "")
        return
    if "hook" in data or "context" in data:
        prefetch = data.get("prefetch") or {}
        if not isinstance(prefetch, dict):
            raise InputError("must be an object", where="prefetch")
        yield from _prefetch(prefetch, "prefetch.")
        context = data.get("context") or {}
        if isinstance(context, dict) and context.get("draftOrders") is not None:
            yield from _resource_or_bundle(context["draftOrders"], "context.draftOrders.")
        return
    yield from _prefetch(data, "")


def _prefetch(prefetch: dict[str, Any], prefix: str) -> Iterator[Entry]:
    for key, value in prefetch.items():
        if value is None:
            continue
        if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            continue  # the EHR could not fetch this item: not our error
        yield from _resource_or_bundle(value, f"{prefix}{key}.")


def _resource_or_bundle(value: Any, prefix: str) -> Iterator[Entry]:
    where = prefix.rstrip(".") or "body"
    if not isinstance(value, dict):
        raise InputError("expected a FHIR resource (a JSON object)", where=where)
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str):
        raise InputError("resourceType missing or not a string", where=where)
    if resource_type not in R4_RESOURCE_TYPES:
        raise InputError(f"unknown resourceType {resource_type[:64]!r}", where=where)
    if resource_type != "Bundle":
        yield Entry(where, value, None)
        return
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise InputError("Bundle.entry must be an array", where=where)
    if len(entries) > MAX_RESOURCES:
        raise PayloadTooLarge(f"Bundle has {len(entries)} entries; the limit is {MAX_RESOURCES}",
                              where=where)
    for index, entry in enumerate(entries):
        place = f"{prefix}entry[{index}]"
        if not isinstance(entry, dict):
            raise InputError("a Bundle entry must be an object", where=place)
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a DELETE in a transaction: nothing to read
        full_url = entry.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            raise InputError("fullUrl must be a string", where=place)
        if not isinstance(resource, dict):
            raise InputError("entry.resource must be a FHIR resource object", where=place)
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise InputError("resourceType missing or not a string", where=place)
        if rtype not in R4_RESOURCE_TYPES:
            raise InputError(f"unknown resourceType {rtype[:64]!r}", where=place)
        if rtype == "Bundle":
            continue  # a nested Bundle is not part of this patient's record
        yield Entry(place, resource, full_url)


class Record:
    """One patient's resources, with reference resolution."""

    def __init__(self, entries: list[Entry], patient_hint: str | None = None) -> None:
        if len(entries) > MAX_RESOURCES:
            raise PayloadTooLarge(f"request holds {len(entries)} resources; the limit is {MAX_RESOURCES}")
        self.entries = entries
        self._index: dict[str, Entry] = {}
        for entry in entries:
            for key in self._keys(entry):
                self._index.setdefault(key, entry)
        patients = {e.reference: e for e in entries if e.type == "Patient"}
        if len(patients) > 1:
            raise InputError(f"the record holds more than one patient ({', '.join(sorted(patients)[:3])});"
                             " evaluate one patient at a time")
        self.patient_entry = next(iter(patients.values()), None)
        self.patient = self.patient_entry.reference if self.patient_entry else patient_hint

    @staticmethod
    def _keys(entry: Entry) -> Iterator[str]:
        rid = entry.resource.get("id")
        if isinstance(rid, str) and rid:
            yield f"{entry.type}/{rid}"
        if entry.full_url:
            yield entry.full_url
            tail = "/".join(entry.full_url.rstrip("/").split("/")[-2:])
            if "/" in tail:
                yield tail

    def resolve(self, reference: str) -> Entry | None:
        entry = self._index.get(reference)
        if entry is None and "/" in reference and not reference.startswith("urn:"):
            entry = self._index.get("/".join(reference.rstrip("/").split("/")[-2:]))
        return entry

    def is_other_patient(self, reference: str | None) -> bool:
        """True when a subject reference names a patient other than ours."""
        if not reference:
            return False
        target = self.resolve(reference)
        if target is not None:
            return target.type == "Patient" and target is not self.patient_entry
        if not reference.startswith("Patient/") and "/Patient/" not in reference:
            return False  # e.g. a Group or a urn we cannot see: not ours to judge
        if self.patient is None:
            return False
        tail = "/".join(reference.rstrip("/").split("/")[-2:])
        return tail != self.patient and reference != self.patient


def read_record(data: Any) -> Record:
    """A Record from parsed request JSON (Bundle, resource, prefetch, hook request)."""
    hint = None
    if isinstance(data, dict) and "resourceType" not in data:
        context = data.get("context")
        if isinstance(context, dict) and isinstance(context.get("patientId"), str):
            hint = f"Patient/{context['patientId'][:64]}"
    return Record(list(iter_entries(data)), patient_hint=hint)
