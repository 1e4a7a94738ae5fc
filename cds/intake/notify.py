"""Red-flag notifications: FHIR R4 Subscription-style REST hooks, from an outbox.

A notification row is written in the same transaction as the change it
announces (cds.intake.store), one per (subscriber, change) under a unique
key, so it exists exactly when the change does and never twice. The
:class:`Notifier` delivers due rows: it claims a row with a lease (so two
workers never send one row at once), POSTs the notification Bundle signed
with HMAC-SHA256 and any headers the subscriber registered, and records the
attempt; a failure is retried with exponential back-off up to a bound, then
marked ``failed`` (the change stays on the worklist regardless). Delivery is
at least once: a receiver deduplicates on ``X-CDS-Notification-Id`` (the
Bundle id), which never changes between attempts.

:class:`DeliveryWorker` is the only thread: started and stopped explicitly,
each round bounded, so tests drain the outbox by calling
:meth:`Notifier.deliver_due` themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from cds.audit.database import SQLITE_BEGIN
from cds.errors import CdsError
from cds.intake.models import Notification, NotificationAttempt, Subscription

log = structlog.get_logger("cds.intake.notify")

SIGNATURE_HEADER = "X-CDS-Signature"
TIMESTAMP_HEADER = "X-CDS-Timestamp"
ID_HEADER = "X-CDS-Notification-Id"
MAX_ATTEMPTS = 10
BASE_DELAY_S = 2.0
MAX_DELAY_S = 300.0
TIMEOUT_S = 5.0
_HEADER = __import__("re").compile(r"^[A-Za-z0-9-]{1,64}:[ \t]*[\x20-\x7e]{1,2048}$")


class SubscriberError(CdsError):
    """A subscriber (file entry or Subscription resource) that cannot be used safely."""

    status = 422
    issue_code = "business-rule"


@dataclass(frozen=True)
class Subscriber:
    key: str                                  # "config:<id>" or "api:<client> <id>"
    endpoint: str
    headers: tuple[str, ...] = ()             # "Name: value", sent with every notification
    clients: tuple[str, ...] | None = None    # config subscribers: only these clients' patients


def check_endpoint(url: Any, where: str) -> str:
    """https anywhere; plain http only to loopback (a test rig, a local relay)."""
    if not isinstance(url, str) or len(url) > 2048:
        raise SubscriberError("endpoint must be an absolute URL", where=where)
    try:
        parts = urlsplit(url)
    except ValueError:  # "https://[x/": an unbalanced IPv6 bracket (a 500 before)
        raise SubscriberError("endpoint is not a valid URL", where=where) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SubscriberError("endpoint must be an absolute http(s) URL", where=where)
    if parts.username or parts.password:
        raise SubscriberError("put credentials in a header, not in the endpoint URL", where=where)
    if parts.scheme == "http":
        host = parts.hostname
        loopback = host == "localhost"
        try:
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not loopback:
            raise SubscriberError("plain http is allowed only to a loopback endpoint; use https", where=where)
    return url


def check_headers(headers: Any, where: str) -> tuple[str, ...]:
    if headers is None:
        return ()
    if not isinstance(headers, list) or not all(isinstance(h, str) and _HEADER.match(h) for h in headers):
        raise SubscriberError('header must be a list of "Name: value" strings', where=where)
    return tuple(headers)


def load_subscribers(path: str, *, signed: bool) -> list[Subscriber]:
    """The subscribers file (YAML or JSON): ``subscribers: [{id, endpoint, header?, clients?}]``."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SubscriberError(f"cannot read the subscribers file: {exc}", where=path) from None
    entries = (doc or {}).get("subscribers") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise SubscriberError("expected a 'subscribers' list", where=path)
    out: list[Subscriber] = []
    for index, entry in enumerate(entries):
        where = f"{path}: subscribers[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "endpoint", "header", "clients"}:
            raise SubscriberError("an entry has id, endpoint, header (optional), clients (optional)", where=where)
        sid = entry.get("id")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            raise SubscriberError("id is required (a short name)", where=where)
        headers = check_headers(entry.get("header"), f"{where}.header")
        if not signed and not headers:
            raise SubscriberError("notifications would go out neither signed (CDS_NOTIFY_SECRET) nor "
                                  "authenticated (a header): set one", where=where)
        clients = entry.get("clients")
        if clients is not None and (not isinstance(clients, list) or not all(isinstance(c, str) for c in clients)):
            raise SubscriberError("clients must be a list of client iss values", where=where)
        out.append(Subscriber(f"config:{sid}", check_endpoint(entry.get("endpoint"), f"{where}.endpoint"),
                              headers, tuple(clients) if clients is not None else None))
    if len({s.key for s in out}) != len(out):
        raise SubscriberError("two subscribers share an id", where=path)
    return out


def notification_bundle(notification_id: str, subscriber: str, *, patient: str, evaluation_id: str,
                        before: str, after: str, change: Mapping[str, Any], at: datetime,
                        worklist_url: str) -> dict[str, Any]:
    """The FHIR R4 notification Bundle (history, Subscriptions-backport shape): a status
    Parameters, then a Flag on the patient saying what rose and why."""
    raised = [i for i in (*change["new"], *change["changed"]) if i["urgency"] in ("urgent", "emergency")]
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flag_id = f"triage-{evaluation_id}"
    flag = {
        "resourceType": "Flag", "id": flag_id, "status": "active",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                  "code": "clinical"}]}],
        "code": {"coding": [{"system": "http://spine-cds.local/fhir/CodeSystem/severity", "code": after}],
                 "text": f"Triage rose from {before} to {after}: "
                         + "; ".join(f"{i['title']} ({i['urgency']})" for i in raised)[:900]},
        "subject": {"reference": patient}, "period": {"start": stamp},
        "extension": [{"url": "http://spine-cds.local/fhir/StructureDefinition/evaluation",
                       "valueString": evaluation_id},
                      {"url": "http://spine-cds.local/fhir/StructureDefinition/worklist",
                       "valueUrl": worklist_url}],
    }
    status = {"resourceType": "Parameters", "id": f"status-{notification_id}", "parameter": [
        {"name": "subscription", "valueReference": {"reference": subscriber}},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "notification-event", "part": [
            {"name": "timestamp", "valueInstant": stamp},
            {"name": "focus", "valueReference": {"reference": f"Flag/{flag_id}"}}]}]}
    return {"resourceType": "Bundle", "id": notification_id, "type": "history", "timestamp": stamp,
            "entry": [{"fullUrl": f"urn:uuid:{notification_id}", "resource": status,
                       "request": {"method": "GET", "url": "Subscription/$status"}, "response": {"status": "200"}},
                      {"fullUrl": f"Flag/{flag_id}", "resource": flag,
                       "request": {"method": "POST", "url": "Flag"}, "response": {"status": "201"}},
                      *[{"fullUrl": f"urn:cds:item:{i['id']}", "resource": _detected_issue(i, patient),
                         "request": {"method": "POST", "url": "DetectedIssue"}, "response": {"status": "201"}}
                        for i in raised]]}


def _detected_issue(item: Mapping[str, Any], patient: str) -> dict[str, Any]:
    return {"resourceType": "DetectedIssue", "status": "preliminary",
            "severity": "high" if item["urgency"] == "emergency" else "moderate",
            "code": {"coding": [{"system": "http://spine-cds.local/fhir/CodeSystem/action", "code": item["action"]}],
                     "text": item["title"]},
            "patient": {"reference": patient}, "detail": item["rationale"][:2000] or item["title"],
            "implicated": [{"reference": ref} for ref in item.get("evidence", [])[:20]]}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=`` HMAC over ``timestamp.body``: the receiver recomputes it and checks the time."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST and return the HTTP status; raise OSError (or requests' errors) when unreachable."""


class RequestsTransport:
    """requests without redirects (a redirect could carry the signature elsewhere)."""

    def __init__(self) -> None:
        import requests

        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment: endpoints are configured

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        response = self.session.post(url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False)
        response.close()
        return int(response.status_code)


@dataclass(frozen=True)
class Attempt:
    notification: str
    outcome: str            # delivered, retry, failed
    http_status: int | None
    error: str | None


class Notifier:
    """Delivers due notifications from the outbox; one call is one bounded round."""

    def __init__(self, engine: Engine, subscribers: list[Subscriber], *, secret: bytes | None,
                 transport: Transport | None = None, now: Callable[[], datetime] | None = None,
                 max_attempts: int = MAX_ATTEMPTS, base_delay: float = BASE_DELAY_S,
                 max_delay: float = MAX_DELAY_S, timeout: float = TIMEOUT_S) -> None:
        self.engine = engine
        self.config_subscribers = {s.key: s for s in subscribers}
        self.secret = secret
        self.transport = transport or RequestsTransport()
        self.now = now or (lambda: datetime.now(UTC))
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout

    def subscribers_for(self, conn: Any, client: str) -> list[Subscriber]:
        """Who hears about this client's patients: configured subscribers and the client's own."""
        out = [s for s in self.config_subscribers.values() if s.clients is None or client in s.clients]
        for row in conn.execute(select(Subscription.sid, Subscription.endpoint, Subscription.headers)
                                .where(Subscription.client == client, Subscription.status == "active")):
            out.append(Subscriber(api_key(client, row.sid), row.endpoint, tuple(json.loads(row.headers))))
        return out

    def delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: base, 2 x base, 4 x base, ..., at most max_delay."""
        return float(min(self.max_delay, self.base_delay * (2 ** max(0, attempts - 1))))

    def deliver_due(self, limit: int = 50) -> list[Attempt]:
        """Try every notification that is due now (at most ``limit``); return what happened."""
        now = self.now()
        try:
            with self.engine.connect() as conn:
                due = list(conn.execute(
                    select(Notification.id).where(
                        Notification.status == "pending", Notification.next_attempt_at <= now,
                        or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                    .order_by(Notification.next_attempt_at).limit(limit)).scalars())
        except SQLAlchemyError as exc:
            log.error("notify_read_failed", error=type(exc).__name__)
            return []
        return [a for a in (self._deliver(nid) for nid in due) if a is not None]

    def _deliver(self, notification_id: str) -> Attempt | None:
        now = self.now()
        lease = now + timedelta(seconds=self.timeout * 2 + 5)
        with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
            claimed = conn.execute(
                update(Notification).where(
                    Notification.id == notification_id, Notification.status == "pending",
                    or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .values(lease_until=lease)).rowcount
            if claimed != 1:
                return None  # another worker has it
            row = conn.execute(select(Notification.__table__).where(Notification.id == notification_id)).one()
        subscriber = self._subscriber(row.subscriber)
        status: int | None = None
        error: str | None = None
        if subscriber is None:
            error = "subscriber no longer registered"
        else:
            body = row.payload.encode()
            stamp = str(int(now.timestamp()))
            headers = {"Content-Type": "application/fhir+json", ID_HEADER: row.id, TIMESTAMP_HEADER: stamp}
            for header in subscriber.headers:
                name, _, value = header.partition(":")
                headers[name.strip()] = value.strip()
            if self.secret:
                headers[SIGNATURE_HEADER] = sign(self.secret, stamp, body)
            try:
                status = self.transport.post(subscriber.endpoint, body, headers, self.timeout)
            except Exception as exc:  # noqa: BLE001 - any transport failure is a failed attempt, retried
                error = f"{type(exc).__name__}: unreachable"
            else:
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
        attempts = row.attempts + 1
        if error is None:
            outcome = "delivered"
        elif subscriber is None or attempts >= self.max_attempts:
            outcome = "failed"
        else:
            outcome = "retry"
        done = self.now()
        values: dict[str, Any] = {"attempts": attempts, "lease_until": None, "last_error": error}
        if outcome == "delivered":
            values.update(status="delivered", delivered_at=done)
        elif outcome == "failed":
            values.update(status="failed")
        else:
            values.update(next_attempt_at=done + timedelta(seconds=self.delay(attempts)))
        with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
            conn.execute(update(Notification).where(and_(Notification.id == row.id)).values(**values))
            conn.execute(insert(NotificationAttempt), {"notification_id": row.id, "attempt": attempts, "at": done,
                                                       "outcome": outcome, "http_status": status, "error": error})
        event = log.info if outcome == "delivered" else (log.warning if outcome == "retry" else log.error)
        event("notification_" + outcome, subscriber=row.subscriber, attempt=attempts, http_status=status,
              error=error)
        return Attempt(row.id, outcome, status, error)

    def _subscriber(self, key: str) -> Subscriber | None:
        if key in self.config_subscribers:
            return self.config_subscribers[key]
        if not key.startswith("api:"):
            return None
        client, _, sid = key[4:].rpartition(" ")
        with self.engine.connect() as conn:
            row = conn.execute(select(Subscription.endpoint, Subscription.headers).where(
                Subscription.client == client, Subscription.sid == sid, Subscription.status == "active")).first()
        return Subscriber(key, row.endpoint, tuple(json.loads(row.headers))) if row else None


def api_key(client: str, sid: str) -> str:
    return f"api:{client} {sid}"


class DeliveryWorker:
    """One daemon thread running :meth:`Notifier.deliver_due` when woken (after a commit) or every
    ``interval`` seconds (retries); :meth:`stop` ends it within one round."""

    def __init__(self, notifier: Notifier, *, interval: float = 1.0) -> None:
        self.notifier = notifier
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # request threads may all ask at once: one thread only

    def start(self) -> None:
        with self._starting:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="cds-notify", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        with self._starting:
            self._stop.set()
            self._wake.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.notifier.deliver_due()
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a bad round; it is logged
                log.error("notify_round_failed", error=type(exc).__name__)
