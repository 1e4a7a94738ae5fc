"""Fill what the prefetch lacks from the CDS Client's FHIR server.

CDS Hooks lets a client omit prefetch keys and pass ``fhirServer`` with a
``fhirAuthorization`` bearer token instead; the service then fetches what it
needs itself. Here:

* only the templates the discovery document declares are fetched, with
  the patient id from the context substituted;
* search results are followed through ``next`` links, which must stay on
  the same server (the token is never sent anywhere else);
* the whole fill is bounded in time, pages and bytes; when a template
  cannot be had the caller answers 412;
* the server must be https (plain http only on loopback, or when
  CDS_FHIR_ALLOW_HTTP says so for a test rig);
* the access token is never logged or kept.

No Flask here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from cds.api.schemas import check_depth
from cds.bootstrap import is_loopback
from cds.errors import MalformedJson, PreconditionFailed
from cds.fhir import MAX_BODY_BYTES, MAX_RESOURCES

#: prefetch key -> (FHIR query template, the resource type it yields)
PREFETCH: dict[str, tuple[str, str]] = {
    "patient": ("Patient/{{context.patientId}}", "Patient"),
    "conditions": ("Condition?patient={{context.patientId}}", "Condition"),
    "observations": ("Observation?patient={{context.patientId}}", "Observation"),
    "medicationStatements": ("MedicationStatement?patient={{context.patientId}}", "MedicationStatement"),
    "medicationRequests": ("MedicationRequest?patient={{context.patientId}}", "MedicationRequest"),
    "procedures": ("Procedure?patient={{context.patientId}}", "Procedure"),
    "diagnosticReports": ("DiagnosticReport?patient={{context.patientId}}", "DiagnosticReport"),
    "devices": ("Device?patient={{context.patientId}}", "Device"),
}
#: Without this the service cannot know whose record it reads: 412 if it cannot be had.
REQUIRED = ("patient",)
FETCH_THREADS = 4


@dataclass(frozen=True)
class FetchLimits:
    timeout_seconds: float = 10.0
    max_pages: int = 20
    max_bytes: int = MAX_BODY_BYTES
    allow_http: bool = False


def templates() -> dict[str, str]:
    """The discovery document's prefetch object."""
    return {key: query for key, (query, _type) in PREFETCH.items()}


def _types_present(value: Any) -> set[str]:
    if not isinstance(value, dict):
        return set()
    kind = value.get("resourceType")
    if kind != "Bundle":
        return {kind} if isinstance(kind, str) else set()
    entries = value.get("entry")
    found: set[str] = set()
    if isinstance(entries, list):
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                found.add(resource["resourceType"])
    return found


def missing_keys(prefetch: Mapping[str, Any]) -> list[str]:
    """Templates the client did not satisfy.

    A key sent with a value (null included: "no such data") is satisfied;
    an OperationOutcome in its place (the client's fetch failed) is not.
    Clients that name their keys differently are judged by content: a
    template counts as satisfied when resources of its type arrived under
    any key.
    """
    present: set[str] = set()
    for value in prefetch.values():
        present |= _types_present(value)
    out = []
    for key, (_query, rtype) in PREFETCH.items():
        value = prefetch.get(key, ...)
        if value is ... or (isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"):
            if rtype not in present:
                out.append(key)
    return out


def check_server(url: str, *, allow_http: bool) -> str:
    """The FHIR base URL if it is safe to send a token to, else PreconditionFailed."""
    parts = urlsplit(url)
    if not parts.hostname or parts.username or parts.password:
        raise PreconditionFailed("fhirServer is not a usable URL", where="fhirServer")
    if parts.scheme == "https" or (parts.scheme == "http" and (allow_http or is_loopback(parts.hostname))):
        return url.rstrip("/")
    raise PreconditionFailed("the service sends access tokens only over https; fhirServer is plain http",
                             where="fhirServer")


class FhirFetcher:
    """Reads the missing templates with the client's bearer token."""

    def __init__(self, limits: FetchLimits, session_factory: Any = requests.Session) -> None:
        self.limits = limits
        self._session_factory = session_factory

    def fill(self, request: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
        """Fetched values for ``keys``: prefetch key -> Bundle or resource (or None)."""
        server = request.get("fhirServer")
        auth = request.get("fhirAuthorization")
        if not isinstance(server, str) or not isinstance(auth, dict):
            raise PreconditionFailed(
                f"prefetch lacks {', '.join(keys)} and the request grants no FHIR access "
                "(fhirServer with fhirAuthorization) to fetch it", where="prefetch")
        base = check_server(server, allow_http=self.limits.allow_http)
        patient_id = request["context"]["patientId"]
        deadline = time.monotonic() + self.limits.timeout_seconds
        budget = _Budget(self.limits.max_bytes)
        token = auth["access_token"]
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(keys))) as pool:
            futures = {key: pool.submit(self._fetch_one, base, token, key, patient_id, deadline, budget)
                       for key in keys}
            return {key: future.result() for key, future in futures.items()}

    def _fetch_one(self, base: str, token: str, key: str, patient_id: str, deadline: float,
                   budget: _Budget) -> Any:
        query, rtype = PREFETCH[key]
        url = f"{base}/{query.replace('{{context.patientId}}', patient_id)}"
        with self._session_factory() as session:
            session.headers.update({"Authorization": f"Bearer {token}",
                                    "Accept": "application/fhir+json, application/json"})
            if rtype == "Patient":
                status, body = self._get(session, url, key, deadline, budget)
                if status == 404:
                    return None
                if not isinstance(body, dict) or body.get("resourceType") != "Patient":
                    raise PreconditionFailed("fhirServer did not answer with a Patient", where=f"prefetch.{key}")
                return body
            entries: list[Any] = []
            pages = 0
            while url:
                pages += 1
                if pages > self.limits.max_pages:
                    raise PreconditionFailed(f"search for {key} has more than {self.limits.max_pages} pages",
                                             where=f"prefetch.{key}")
                status, body = self._get(session, url, key, deadline, budget)
                if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
                    raise PreconditionFailed("fhirServer did not answer with a searchset Bundle",
                                             where=f"prefetch.{key}")
                page = body.get("entry") or []
                if not isinstance(page, list):
                    raise PreconditionFailed("fhirServer answered a Bundle whose entry is not an array",
                                             where=f"prefetch.{key}")
                entries.extend(e for e in page if not (isinstance(e, dict) and
                                                       (e.get("search") or {}).get("mode") == "outcome"))
                if len(entries) > MAX_RESOURCES:
                    raise PreconditionFailed(f"search for {key} returned over {MAX_RESOURCES} resources",
                                             where=f"prefetch.{key}")
                url = self._next(body, base, url, key)
            return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}

    @staticmethod
    def _next(body: Mapping[str, Any], base: str, current: str, key: str) -> str:
        for link in body.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                target = urljoin(current, link["url"])
                if not (target == base or target.startswith(base + "/") or target.startswith(base + "?")):
                    raise PreconditionFailed("fhirServer's next link leaves the server; not followed",
                                             where=f"prefetch.{key}")
                return target
        return ""

    def _get(self, session: Any, url: str, key: str, deadline: float, budget: _Budget) -> tuple[int, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PreconditionFailed(f"fetching {key} from fhirServer took over "
                                     f"{self.limits.timeout_seconds:g} s", where=f"prefetch.{key}")
        try:
            with session.get(url, timeout=(min(remaining, 3.0), remaining), stream=True,
                             allow_redirects=False) as response:
                status = response.status_code
                if status in (401, 403):
                    raise PreconditionFailed(f"fhirServer refused access to {key} (HTTP {status})",
                                             where=f"prefetch.{key}")
                if status == 404 and key == "patient":
                    return status, None
                if status != 200:
                    raise PreconditionFailed(f"fhirServer answered HTTP {status} for {key}",
                                             where=f"prefetch.{key}")
                chunks = []
                for chunk in response.iter_content(65536):
                    budget.spend(len(chunk), key)
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise PreconditionFailed(f"fetching {key} from fhirServer took over "
                                                 f"{self.limits.timeout_seconds:g} s", where=f"prefetch.{key}")
        except requests.RequestException as exc:
            raise PreconditionFailed(f"fhirServer could not be reached for {key} ({type(exc).__name__})",
                                     where=f"prefetch.{key}") from None
        try:
            data = json.loads(b"".join(chunks))
            check_depth(data)
        except (ValueError, RecursionError, MalformedJson):
            raise PreconditionFailed(f"fhirServer's answer for {key} is not usable JSON",
                                     where=f"prefetch.{key}") from None
        return status, data


class _Budget:
    """Bytes all fetches of one request may read together."""

    def __init__(self, limit: int) -> None:
        import threading

        self.left = limit
        self._lock = threading.Lock()

    def spend(self, n: int, key: str) -> None:
        with self._lock:
            self.left -= n
            if self.left < 0:
                raise PreconditionFailed("data fetched from fhirServer is over the size limit",
                                         where=f"prefetch.{key}")
