"""Each accepted post re-evaluates its patient through the audited path; the difference is
stored; the worklist lists it most urgent first and closes through card feedback."""

from __future__ import annotations

from cds.audit import AuditStore
from cds.errors import StoreUnavailable
from tests.intake.conftest import RETENTION, SCIATICA, evaluations, observation, patient, put_entry


def _feedback(intake, card: str, outcome: str = "accepted", suggestions: list[str] | None = None):
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-22T03:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": s} for s in (suggestions or [])] or [{"id": "none"}]
    else:
        item["overrideReason"] = {"reason": {"system": "http://spine-cds.local/fhir/CodeSystem/override-reason",
                                             "code": "already-addressed"}}
    return intake.caller.post("/cds-services/back-neuropathy-patient-view/feedback", {"feedback": [item]})


def test_each_changing_post_is_one_audited_intake_evaluation(intake, store) -> None:
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    intake.put(observation("o-ret", RETENTION))
    trail = evaluations(store)
    assert [e["channel"] for e in trail] == ["intake", "intake", "intake"]
    assert [e["triage"] for e in trail] == ["none", "self-care", "emergency"]
    trace = store.get_evaluation(trail[-1]["id"], include_raw=True)
    assert "Observation/o-ret" in trace["input"]["raw"] and "Observation/o-sci" in trace["input"]["raw"]
    assert trace["cards"] and all(c["uuid"] for c in trace["cards"])
    assert store.verify().ok


def test_the_worklist_shows_what_changed_and_why_most_urgent_first(intake) -> None:
    intake.transaction(put_entry(patient("calm")), put_entry(observation("c-sci", SCIATICA, pid="calm")))
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    intake.put(observation("o-ret", RETENTION))
    listed = intake.worklist()["patients"]
    assert [p["patient"] for p in listed] == ["Patient/p1", "Patient/calm"]
    p1 = listed[0]
    assert p1["triage"] == "emergency" and p1["urgency"] == "emergency"
    latest = p1["changes"][0]
    assert latest["triage"] == {"before": "self-care", "after": "emergency"}
    new = {i["action"]: i for i in latest["new"]}
    assert new["emergency-spine-surgery"]["urgency"] == "emergency"
    assert new["emergency-spine-surgery"]["evidence"] == ["Observation/o-ret"]
    assert new["emergency-spine-surgery"]["rationale"]
    assert {i["action"] for i in latest["withdrawn"]} >= {"stay-active"}
    indicators = [c["indicator"] for c in latest["cards"]]
    assert "critical" in indicators
    assert any(c["summary"].startswith("No longer suggested") for c in latest["cards"])
    assert not latest["acknowledged"]


def test_feedback_on_every_card_acknowledges_a_change(intake) -> None:
    intake.put(patient())
    intake.put(observation("o-ret", RETENTION))
    change = intake.worklist()["patients"][0]["changes"][0]
    for index, card in enumerate(change["cards"]):
        outcome = "accepted" if index == 0 else "overridden"
        suggestions = [s["uuid"] for s in card.get("suggestions", [])]
        answer = _feedback(intake, card["uuid"], outcome, suggestions)
        assert answer.status_code == 200, answer.json
        still = intake.worklist()["patients"]
        if index < len(change["cards"]) - 1:
            assert still and still[0]["changes"][0]["cards"][index]["feedback"] == [outcome]
    assert intake.worklist()["patients"] == []
    everything = intake.worklist("?all=1")["patients"]
    assert everything[0]["changes"][0]["acknowledged"] is True


def test_entered_in_error_withdraws_the_emergency_and_says_so(intake) -> None:
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    intake.put(observation("o-ret", RETENTION))
    withdrawn = intake.put(observation("o-ret", RETENTION, status="entered-in-error"))
    assert withdrawn.status_code == 200 and withdrawn.headers["ETag"] == 'W/"2"'
    p1 = intake.worklist()["patients"][0]
    latest = p1["changes"][0]
    assert latest["triage"] == {"before": "emergency", "after": "self-care"}
    assert {i["action"] for i in latest["withdrawn"]} >= {"emergency-spine-surgery", "mri-lumbar"}
    card = next(c for c in latest["cards"] if c["summary"].startswith("No longer suggested"))
    assert card["indicator"] == "warning"
    # The emergency change before it stays on the list until acknowledged: never hidden.
    assert p1["urgency"] == "emergency"
    assert any(c["triage"]["after"] == "emergency" for c in p1["changes"])


class _FailingAudit(AuditStore):
    """The real store, whose evaluation appends fail as a full disk or a dead database would."""

    failing = True

    def record_evaluation(self, record, raw_input=None):  # type: ignore[no-untyped-def]
        if self.failing:
            raise StoreUnavailable("the audit record could not be written, so the result is not released")
        return super().record_evaluation(record, raw_input)


def test_when_the_audit_cannot_be_written_the_post_is_503_and_nothing_is_applied(store, bundled, clock) -> None:
    from cds.api import create_app
    from tests.api.conftest import app_config
    from tests.intake.conftest import Intake

    failing = _FailingAudit(store.engine, store_input="full")
    failing.failing = False
    intake = Intake(create_app(app_config(EVALUATOR=bundled, AUDIT=failing, NOW=clock, CDS_NOTIFY_WORKER="off")))
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    failing.failing = True
    answer = intake.put(observation("o-ret", RETENTION))
    assert answer.status_code == 503 and answer.json["issue"][0]["code"] == "transient"
    assert intake.send("GET", "/fhir/Observation/o-ret").status_code == 404
    assert intake.worklist()["patients"][0]["triage"] == "self-care"
    failing.failing = False
    retried = intake.put(observation("o-ret", RETENTION))
    assert retried.status_code == 201 and retried.headers["ETag"] == 'W/"1"'
    assert intake.worklist()["patients"][0]["triage"] == "emergency"


def test_when_the_record_cannot_be_written_after_the_audit_nothing_is_applied(intake, store, monkeypatch) -> None:
    """The database failing between the two commits: 503, the post is not applied, and the trail
    keeps one evaluation more than was applied (more, never fewer)."""
    from sqlalchemy.exc import OperationalError

    from cds.intake.store import RecordStore

    intake.put(patient())
    before = len(evaluations(store))
    real_write = RecordStore._write

    def failing_write(self, conn, *args):  # type: ignore[no-untyped-def]
        real_write(self, conn, *args)  # written inside the transaction, then the disk fails
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(RecordStore, "_write", failing_write)
    answer = intake.put(observation("o-ret", RETENTION))
    assert answer.status_code == 503 and answer.json["issue"][0]["code"] == "transient"
    monkeypatch.undo()
    assert intake.send("GET", "/fhir/Observation/o-ret").status_code == 404
    assert intake.worklist()["patients"] == []  # the patient's only evaluation changed nothing
    assert len(evaluations(store)) == before + 1
    assert intake.put(observation("o-ret", RETENTION)).status_code == 201
    assert intake.worklist()["patients"][0]["triage"] == "emergency"
