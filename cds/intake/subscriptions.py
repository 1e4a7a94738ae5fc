"""``POST /fhir/Subscription``: a client registers a REST hook for its patients' red flags.

An R4 Subscription with ``channel.type`` ``rest-hook``; ``criteria`` is
kept as sent (the event is always the same: a patient of this client whose
triage rises to urgent or emergency). ``channel.header`` values are sent
with every notification and are never shown back (masked on read).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from cds.audit.database import SQLITE_BEGIN
from cds.errors import InputError, StoreUnavailable
from cds.intake.errors import VersionConflict
from cds.intake.models import Subscription
from cds.intake.notify import SubscriberError, check_endpoint, check_headers
from cds.intake.requests import FHIR_ID

_STATUSES = ("requested", "active", "off")


def validate(body: Any, *, signed: bool) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        raise InputError("a FHIR R4 Subscription is required", where="body")
    if body.get("status") not in _STATUSES:
        raise InputError(f"must be one of {', '.join(_STATUSES)}", where="Subscription.status")
    if not isinstance(body.get("criteria"), str) or not body["criteria"]:
        raise InputError("is required (kept as sent)", where="Subscription.criteria")
    channel = body.get("channel")
    if not isinstance(channel, dict) or channel.get("type") != "rest-hook":
        raise InputError("only rest-hook channels are supported", where="Subscription.channel.type")
    if channel.get("payload") not in (None, "application/fhir+json", "application/json"):
        raise InputError("payload must be application/fhir+json", where="Subscription.channel.payload")
    check_endpoint(channel.get("endpoint"), "Subscription.channel.endpoint")
    headers = check_headers(channel.get("header"), "Subscription.channel.header")
    if not signed and not headers:
        raise SubscriberError("without CDS_NOTIFY_SECRET notifications are not signed: give a header "
                              "(e.g. Authorization) the endpoint checks", where="Subscription.channel.header")
    return body


def masked(resource: dict[str, Any]) -> dict[str, Any]:
    channel = dict(resource.get("channel") or {})
    if channel.get("header"):
        channel["header"] = [h.split(":", 1)[0] + ": ***" for h in channel["header"]]
    return {**resource, "channel": channel}


class Subscriptions:
    def __init__(self, engine: Engine, *, signed: bool) -> None:
        self.engine = engine
        self.signed = signed

    def put(self, client: str, sid: str | None, body: Any, at: datetime, *,
            if_match: int | None = None) -> tuple[int, dict[str, Any]]:
        """Create (201) or replace (200) a subscription; returns the status and the masked resource."""
        validate(body, signed=self.signed)
        if sid is None:
            sid = body.get("id") if isinstance(body.get("id"), str) else str(uuid.uuid4())
        if not FHIR_ID.fullmatch(sid) or body.get("id") not in (None, sid):
            raise InputError("the id must be a FHIR id and match the url", where="Subscription.id")
        status = "off" if body["status"] == "off" else "active"
        try:
            with self.engine.connect().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}) as conn, conn.begin():
                current = conn.execute(select(Subscription.version).where(
                    Subscription.client == client, Subscription.sid == sid)).scalar()
                if if_match is not None and current != if_match:
                    raise VersionConflict(f"If-Match asks for version {if_match}, the server has {current}",
                                          where=f"Subscription/{sid}")
                version = (current or 0) + 1
                resource = {**body, "id": sid, "status": status,
                            "meta": {"versionId": str(version), "lastUpdated": at.isoformat()}}
                row = {"version": version, "status": status, "endpoint": body["channel"]["endpoint"],
                       "headers": json.dumps(list(body["channel"].get("header") or [])),
                       "content": json.dumps(resource), "updated_at": at}
                if current is None:
                    conn.execute(insert(Subscription), {"client": client, "sid": sid, **row})
                else:
                    conn.execute(update(Subscription).where(Subscription.client == client,
                                                            Subscription.sid == sid).values(**row))
        except SQLAlchemyError as exc:
            raise StoreUnavailable("the subscription could not be stored; try again") from exc
        return (201 if current is None else 200), masked(resource)

    def get(self, client: str, sid: str) -> dict[str, Any] | None:
        try:
            with self.engine.connect() as conn:
                text = conn.execute(select(Subscription.content).where(
                    Subscription.client == client, Subscription.sid == sid)).scalar()
        except SQLAlchemyError as exc:
            raise StoreUnavailable("subscriptions cannot be read; try again later") from exc
        return masked(json.loads(text)) if text else None

