"""Fixtures for the intake tests: an app on a real audit store (SQLite and PostgreSQL), a
movable clock, FHIR builders, and a real HTTP receiver on loopback for notifications."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cds.api import create_app
from cds.audit import AuditStore
from tests.api.conftest import BASE_URL, Caller, Keys, app_config, keys, trusted_clients_file  # noqa: F401
from tests.audit.conftest import StoreFactory, make_store, postgres_available  # noqa: F401

SNOMED = "http://snomed.info/sct"
RETENTION = "267064002"     # urinary retention: a cauda equina red flag
SCIATICA = "23056005"
SECRET = "notify-s3cret"
START = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


class Clock:
    """The service's and the notifier's 'now'; tests move it to pass back-off delays."""

    def __init__(self, start: datetime = START) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records notification POSTs; it can answer 503
    (``failing``), or not be listening at all until :meth:`start`."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[dict[str, Any]] = []
        self.failing = False
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 503 if receiver.failing else 200
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "answered": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def delivered(self) -> list[dict[str, Any]]:
        return [r for r in self.received if r["answered"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(make_store: StoreFactory) -> AuditStore:  # noqa: F811 - the audit factory, on each backend
    return make_store(store_input="full")


def subscribers_file(tmp_path: Path, receiver: Receiver, **extra: Any) -> str:
    path = tmp_path / "subscribers.yaml"
    path.write_text(json.dumps({"subscribers": [{"id": "on-call", "endpoint": receiver.url,
                                                 "header": ["Authorization: Bearer pager-token"], **extra}]}))
    return str(path)


class Intake:
    """The app and a client for it, with the FHIR calls the tests make."""

    def __init__(self, app: Any, signing: Keys | None = None) -> None:
        self.app = app
        self.caller = Caller(app, signing)
        self.runtime = app.extensions["cds_intake"]

    def send(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             raw: bytes | None = None, token: bool | str = True) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return self.caller.http.open(path, method=method, data=data, content_type="application/fhir+json",
                                     headers={**self.caller.headers(path, token), **(headers or {})})

    def put(self, resource: dict[str, Any], **kw: Any) -> Any:
        return self.send("PUT", f"/fhir/{resource['resourceType']}/{resource['id']}", resource, **kw)

    def post(self, resource: dict[str, Any], **kw: Any) -> Any:
        return self.send("POST", f"/fhir/{resource['resourceType']}", resource, **kw)

    def transaction(self, *entries: dict[str, Any], kind: str = "transaction") -> Any:
        return self.send("POST", "/fhir", {"resourceType": "Bundle", "type": kind, "entry": list(entries)})

    def worklist(self, query: str = "") -> dict[str, Any]:
        response = self.send("GET", "/worklist" + query)
        assert response.status_code == 200, response.json
        return response.json  # type: ignore[no-any-return]

    def drain(self) -> list[Any]:
        return self.runtime.notifier.deliver_due()


@pytest.fixture
def make_intake(store: AuditStore, bundled: Any, clock: Clock, tmp_path: Path) -> Iterator[Any]:
    apps: list[Any] = []

    def make(**config: Any) -> Intake:
        settings = {"EVALUATOR": bundled, "AUDIT": store, "NOW": clock, "CDS_NOTIFY_WORKER": "off",
                    "CDS_NOTIFY_SECRET": SECRET, **config}
        app = create_app(app_config(**settings))
        apps.append(app)
        return Intake(app)

    yield make
    for app in apps:
        runtime = app.extensions.get("cds_intake")
        if runtime is not None:
            runtime.close()


@pytest.fixture
def intake(make_intake: Any) -> Intake:
    return make_intake()


def patient(pid: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1970-01-01", "gender": "female"}


def observation(rid: str, code: str, on: str = "2026-11-20", *, value: Any = True, pid: str = "p1",
                status: str = "final", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": status,
                                "code": {"coding": [{"system": SNOMED, "code": code}]},
                                "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": on, **extra}
    if value is not None:
        resource["valueBoolean"] = value
    return resource


def put_entry(resource: dict[str, Any], **request: Any) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT",
                                              "url": f"{resource['resourceType']}/{resource['id']}", **request}}


def post_entry(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"],
                                                               **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def evaluations(store: AuditStore, patient_ref: str = "Patient/p1") -> list[dict[str, Any]]:
    return store.list_evaluations(patient=patient_ref, limit=500).items
