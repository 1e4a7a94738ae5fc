"""Red-flag notifications: a real HTTP receiver on loopback; delivery, signature, retry with
back-off after the receiver was down, and never a duplicate for the same change."""

from __future__ import annotations

import json
import time

import pytest

from cds.intake.notify import SubscriberError, load_subscribers, sign
from tests.intake.conftest import (
    RETENTION,
    SCIATICA,
    SECRET,
    observation,
    patient,
    subscribers_file,
)


def _notified(make_intake, receiver, tmp_path, **config):
    return make_intake(CDS_SUBSCRIBERS_FILE=subscribers_file(tmp_path, receiver), **config)


def test_a_rise_to_emergency_is_delivered_signed_once(make_intake, receiver, tmp_path) -> None:
    receiver.start()
    intake = _notified(make_intake, receiver, tmp_path)
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    assert intake.drain() == []  # self-care is no red flag: nothing to send
    intake.put(observation("o-ret", RETENTION))
    attempts = intake.drain()
    assert [a.outcome for a in attempts] == ["delivered"]
    (got,) = receiver.received
    headers = got["headers"]
    assert headers["Authorization"] == "Bearer pager-token"
    assert headers["X-CDS-Signature"] == sign(SECRET.encode(), headers["X-CDS-Timestamp"], got["body"])
    bundle = json.loads(got["body"])
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    assert bundle["id"] == headers["X-CDS-Notification-Id"]
    flag = bundle["entry"][1]["resource"]
    assert flag["resourceType"] == "Flag" and flag["subject"] == {"reference": "Patient/p1"}
    assert "from self-care to emergency" in flag["code"]["text"]
    issues = [e["resource"] for e in bundle["entry"][2:]]
    assert {i["code"]["coding"][0]["code"] for i in issues} >= {"emergency-spine-surgery"}
    assert issues[0]["implicated"] == [{"reference": "Observation/o-ret"}]
    # Draining again, re-posting the same observation, or another emergency finding: no duplicate.
    assert intake.drain() == []
    intake.put(observation("o-ret", RETENTION))
    intake.put(observation("o-ret2", "165232002"))
    assert intake.drain() == []
    assert len(receiver.received) == 1
    status = intake.worklist()["patients"][0]["changes"]
    assert any(n == [{"subscriber": "config:on-call", "status": "delivered", "attempts": 1}]
               for n in (c["notifications"] for c in status))


def test_a_receiver_that_was_down_gets_it_after_back_off(make_intake, receiver, tmp_path, clock) -> None:
    intake = _notified(make_intake, receiver, tmp_path)
    intake.put(patient())
    intake.put(observation("o-ret", RETENTION))
    first = intake.drain()  # nobody listens on the port yet
    assert [a.outcome for a in first] == ["retry"] and first[0].http_status is None
    receiver.start()
    receiver.failing = True
    assert intake.drain() == []  # not due: the back-off holds it
    clock.advance(2.1)
    second = intake.drain()
    assert [(a.outcome, a.http_status) for a in second] == [("retry", 503)]
    clock.advance(2.1)
    assert intake.drain() == []  # the second wait is twice as long
    clock.advance(2.0)
    receiver.failing = False
    third = intake.drain()
    assert [a.outcome for a in third] == ["delivered"]
    assert len(receiver.delivered()) == 1 and len(receiver.received) == 2
    ids = {r["headers"]["X-CDS-Notification-Id"] for r in receiver.received}
    assert len(ids) == 1  # every attempt carries the same id, for the receiver to deduplicate
    clock.advance(3600)
    assert intake.drain() == []


def test_delivery_gives_up_after_the_bound_and_the_change_stays_listed(make_intake, receiver, tmp_path, clock) -> None:
    intake = _notified(make_intake, receiver, tmp_path)
    intake.runtime.notifier.max_attempts = 3
    intake.put(patient())
    intake.put(observation("o-ret", RETENTION))
    outcomes = []
    for _ in range(5):
        outcomes += [a.outcome for a in intake.drain()]
        clock.advance(400)
    assert outcomes == ["retry", "retry", "failed"]
    change = intake.worklist()["patients"][0]["changes"][0]
    assert change["notifications"][0]["status"] == "failed"
    assert change["triage"]["after"] == "emergency"


def test_a_client_registers_a_subscription_and_gets_its_own_patients(make_intake, receiver) -> None:
    receiver.start()
    intake = make_intake()
    subscription = {"resourceType": "Subscription", "status": "requested", "reason": "red flags",
                    "criteria": "Observation?code=http://snomed.info/sct|267064002",
                    "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json",
                                "header": ["Authorization: Bearer ward-7"]}}
    created = intake.post(subscription)
    assert created.status_code == 201, created.json
    assert created.json["status"] == "active"
    assert created.json["channel"]["header"] == ["Authorization: ***"]
    sid = created.json["id"]
    assert intake.send("GET", f"/fhir/Subscription/{sid}").json["channel"]["header"] == ["Authorization: ***"]
    intake.put(patient())
    intake.put(observation("o-ret", RETENTION))
    assert [a.outcome for a in intake.drain()] == ["delivered"]
    assert receiver.received[0]["headers"]["Authorization"] == "Bearer ward-7"
    bundle = json.loads(receiver.received[0]["body"])
    assert bundle["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"].endswith(sid)


def test_subscriptions_that_would_be_unsafe_are_refused(make_intake, tmp_path, receiver) -> None:
    intake = make_intake()
    base = {"resourceType": "Subscription", "status": "requested", "criteria": "Observation",
            "channel": {"type": "rest-hook", "endpoint": "http://10.1.2.3/hook"}}
    off_loopback = intake.post(base)
    assert off_loopback.status_code == 422 and "loopback" in off_loopback.json["issue"][0]["diagnostics"]
    email = {**base, "channel": {"type": "email", "endpoint": "mailto:x@example.org"}}
    assert intake.post(email).status_code == 400
    unsigned = make_intake(CDS_NOTIFY_SECRET="")
    no_auth = {**base, "channel": {"type": "rest-hook", "endpoint": receiver.url}}
    refused = unsigned.post(no_auth)
    assert refused.status_code == 422 and "signed" in refused.json["issue"][0]["diagnostics"]
    path = tmp_path / "subs.yaml"
    path.write_text("subscribers:\n  - id: a\n    endpoint: " + receiver.url + "\n")
    with pytest.raises(SubscriberError, match="neither signed"):
        load_subscribers(str(path), signed=False)
    path.write_text("subscribers:\n  - id: a\n    endpoint: ftp://127.0.0.1/x\n")
    with pytest.raises(SubscriberError, match="http"):
        load_subscribers(str(path), signed=True)


def test_the_worker_thread_delivers_promptly_and_stops(make_intake, receiver, tmp_path) -> None:
    receiver.start()
    intake = _notified(make_intake, receiver, tmp_path, CDS_NOTIFY_WORKER="on")
    worker = intake.runtime.worker
    assert not worker.running  # no thread until there is something to send
    intake.put(patient())
    intake.put(observation("o-ret", RETENTION))
    assert worker.running
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(receiver.delivered()) == 1
    intake.runtime.close()
    assert not worker.running
