"""Fixtures for the HTTP service: apps (auth on and off), signed JWTs, CDS
Hooks requests, a local FHIR server.

Client keys are generated here with ``cryptography`` (ES384 and RS384);
the trusted-clients file is written to a temporary directory. Every app
shares the session's evaluator of the bundled ruleset and gets a fresh
in-memory audit sink and replay store.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.api import create_app
from cds.api import schemas as api_schemas
from cds.api.auth import MemoryReplayStore
from cds.evaluation.ports import MemoryAudit
from tests.conftest import SHARED_EXTERNAL, SNOMED

BASE_URL = "http://cds.test"
ISSUER = "https://ehr.test/"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PV = "back-neuropathy-patient-view"
OSEL = "back-neuropathy-order-select"
OSIGN = "back-neuropathy-order-sign"
HOOK_FIXTURES = SHARED_EXTERNAL / "FHIR__fhir-test-cases" / "validator"
PAMA = SHARED_EXTERNAL / "argonautproject__cds-hooks-for-pama" / "connectathon-scenarios-2019-09" / "examples"
CPT = "http://www.ama-assn.org/go/cpt"


class Keys:
    """One client's signing keys and its public JWKS."""

    def __init__(self) -> None:
        self.es384 = ec.generate_private_key(ec.SECP384R1())
        self.rs384 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.es256 = ec.generate_private_key(ec.SECP256R1())

    @staticmethod
    def public_jwk(private: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[
            "ES384" if isinstance(private, ec.EllipticCurvePrivateKey) else "RS384"].to_jwk(private.public_key()))
        jwk.update({"kid": kid, "use": "sig"})
        if alg:
            jwk["alg"] = alg
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk(self.es384, "es-1", "ES384"), self.public_jwk(self.rs384, "rs-1"),
                         self.public_jwk(self.es256, "es256-1")]}


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def trusted_clients_file(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    directory = tmp_path_factory.mktemp("clients")
    (directory / "ehr-jwks.json").write_text(json.dumps(keys.jwks()))
    doc = {"clients": [
        {"iss": ISSUER, "name": "Test EHR", "jwks_file": "ehr-jwks.json",
         "jku": ["http://127.0.0.1:1/never-fetched"]},
    ]}
    path = directory / "trusted-clients.json"
    path.write_text(json.dumps(doc))
    return path


def make_token(keys: Keys, aud: str | list[str], *, alg: str = "ES384", kid: str | None = None,
               iss: str = ISSUER, lifetime: int = 120, iat: float | None = None, jti: str | None = None,
               headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (), key: Any = None) -> str:
    now = time.time() if iat is None else iat
    claims: dict[str, Any] = {"iss": iss, "sub": "ehr-client", "aud": aud, "iat": int(now),
                              "exp": int(now) + lifetime, "jti": jti or str(uuid.uuid4())}
    for name in drop:
        claims.pop(name, None)
    private = key or {"ES384": keys.es384, "RS384": keys.rs384, "ES256": keys.es256}[alg]
    header = {"kid": kid or {"ES384": "es-1", "RS384": "rs-1", "ES256": "es256-1"}.get(alg, "es-1"),
              "typ": "JWT", **(headers or {})}
    return jwt.encode(claims, private, algorithm=alg, headers=header)


class Caller:
    """A test client that signs each call for the URL it calls (unless told not to)."""

    def __init__(self, app: Any, keys: Keys | None) -> None:
        self.app = app
        self.http = app.test_client()
        self.keys = keys

    def headers(self, path: str, token: bool | str = True, **token_args: Any) -> dict[str, str]:
        if isinstance(token, str):
            return {"Authorization": f"Bearer {token}"}
        if self.keys is None or token is False:
            return {}
        value = make_token(self.keys, BASE_URL + path.split("?")[0], **token_args)
        return {"Authorization": f"Bearer {value}"}

    def get(self, path: str, *, token: bool | str = True, **kw: Any) -> Any:
        return self.http.get(path, headers={**self.headers(path, token), **kw.pop("headers", {})}, **kw)

    def post(self, path: str, body: Any = None, *, token: bool | str = True, raw: bytes | None = None,
             content_type: str = "application/json", **kw: Any) -> Any:
        data = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(path, data=data, content_type=content_type,
                              headers={**self.headers(path, token), **kw.pop("headers", {})}, **kw)


def app_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"CDS_AUTH": "off", "CDS_BIND": "127.0.0.1:8080", "CDS_LOG_LEVEL": "info",
                              "AUDIT": MemoryAudit(), "REPLAY_STORE": MemoryReplayStore(),
                              "NOW": lambda: NOW, "CDS_FHIR_TIMEOUT": "3"}
    config.update(overrides)
    return config


@pytest.fixture
def audit() -> MemoryAudit:
    return MemoryAudit()


@pytest.fixture
def secured_app(bundled: Any, trusted_clients_file: Path, audit: MemoryAudit) -> Any:
    return create_app(app_config(CDS_AUTH="on", CDS_TRUSTED_CLIENTS=str(trusted_clients_file),
                                 CDS_PUBLIC_BASE_URL=BASE_URL, EVALUATOR=bundled, AUDIT=audit))


@pytest.fixture
def client(secured_app: Any, keys: Keys) -> Caller:
    """Authentication on: every call signed by the trusted test EHR."""
    return Caller(secured_app, keys)


@pytest.fixture
def open_app(bundled: Any, audit: MemoryAudit) -> Any:
    return create_app(app_config(EVALUATOR=bundled, AUDIT=audit))


@pytest.fixture
def open_client(open_app: Any) -> Caller:
    """Authentication off (loopback bind), for tests about content, not trust."""
    return Caller(open_app, None)


# -- requests ----------------------------------------------------------------

def observation(rid: str, code: str, on: str, *, system: str = SNOMED, value: Any = True,
                patient: str = "p1") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": "final",
                                "code": {"coding": [{"system": system, "code": code}]},
                                "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": on}
    if value is not None:
        resource["valueBoolean"] = value
    return resource


def condition(rid: str, code: str, onset: str, *, patient: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": SNOMED, "code": code}]}, "onsetDateTime": onset,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]}}


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def prefetch(*observations: dict[str, Any], conditions: tuple[dict[str, Any], ...] = (),
             patient: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "patient": patient or {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01",
                               "gender": "female", "name": [{"family": "Zyxwvut", "given": ["Quorra"]}]},
        "observations": searchset(*observations) if observations else None,
        "conditions": searchset(*conditions) if conditions else None,
        "medicationStatements": None, "medicationRequests": None, "procedures": None,
        "diagnosticReports": None, "devices": None,
    }
    out.update(more)
    return out


def hook_request(hook: str = "patient-view", pre: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()),
                            "context": {"userId": "Practitioner/dr-1", "patientId": "p1", **context}}
    if pre is not None:
        body["prefetch"] = pre
    return body


def draft_order(rid: str, code: str, system: str = CPT, *, patient: str = "p1") -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}}


def draft_orders(*orders: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": o} for o in orders]}


CAUDA_EQUINA = (observation("o-retention", "267064002", "2026-11-20"),
                observation("o-sciatica", "23056005", "2026-11-10"))


def assert_cards_response(body: Any) -> list[dict[str, Any]]:
    """Valid per the response schema, and no null or empty value anywhere in a card."""
    api_schemas.validate(api_schemas.CARDS_RESPONSE, body)

    def walk(value: Any, where: str) -> None:
        assert value is not None, f"null at {where}"
        if isinstance(value, (str, list, dict)):
            assert len(value) > 0, f"empty value at {where}"
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    for index, card in enumerate(body["cards"]):
        walk(card, f"cards[{index}]")
    return body["cards"]


# -- a local FHIR server ---------------------------------------------------------

class FhirServer:
    """A tiny threaded FHIR server on 127.0.0.1: reads, paged searches, a bearer token.

    ``resources`` maps a type to its resources; searches return pages of
    ``page_size`` with ``next`` links. ``delay`` slows every answer;
    ``next_host`` puts a foreign host in next links.
    """

    def __init__(self, token: str = "fhir-token-s3cr3t") -> None:
        self.token = token
        self.resources: dict[str, list[dict[str, Any]]] = {}
        self.page_size = 2
        self.delay = 0.0
        self.next_host: str | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Authorization")))
                if server.delay:
                    time.sleep(server.delay)
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self._send(401, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "login", "diagnostics": "no"}]})
                path, _, query = self.path.partition("?")
                parts = [p for p in path.split("/") if p][1:]  # drop the "fhir" base segment
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if len(parts) == 2:
                    found = [r for r in server.resources.get(parts[0], []) if r.get("id") == parts[1]]
                    return self._send(200, found[0]) if found else self._send(404, {
                        "resourceType": "OperationOutcome",
                        "issue": [{"severity": "error", "code": "not-found", "diagnostics": "none"}]})
                items = server.resources.get(parts[0], [])
                offset = int(params.get("_offset", "0"))
                page = items[offset:offset + server.page_size]
                body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(items),
                                        "entry": [{"fullUrl": f"{server.base}/{r['resourceType']}/{r['id']}",
                                                   "resource": r, "search": {"mode": "match"}} for r in page]}
                if offset + server.page_size < len(items):
                    host = server.next_host or server.base
                    body["link"] = [{"relation": "next", "url": f"{host}/{parts[0]}?patient="
                                     f"{params.get('patient')}&_offset={offset + server.page_size}"}]
                self._send(200, body)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/fhir"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, *resources: dict[str, Any]) -> None:
        for r in resources:
            self.resources.setdefault(r["resourceType"], []).append(r)


@pytest.fixture
def fhir_server() -> Iterator[FhirServer]:
    server = FhirServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def fixture_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


Json = Callable[[Path], Any]
