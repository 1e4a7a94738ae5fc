"""The audit read API: auditor tokens only, filters, paging, the whole trace, rule stats."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from flask import Flask

from cds.audit import AuditStore
from cds.audit.auditors import AuditorTokens, hash_token, new_token
from cds.audit.http import audit_blueprint
from cds.audit.recording import Caller
from cds.audit.settings import AuditConfigError
from cds.evaluation.ports import FeedbackRecord
from tests.audit.bundles import cauda_equina, sciatica

TOKEN = "cdsaud_test-token-for-the-auditor"
# A CDS client's bearer token: a signed JWT (header.payload.signature).
CLIENT_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2Voci5leGFtcGxlIiwic3ViIjoiZWhyIn0."
              "c2lnbmF0dXJlLW5vdC1jaGVja2Vk")


@pytest.fixture
def client(store: AuditStore):
    app = Flask(__name__)
    # Even a tokens file that (wrongly) lists a client JWT's hash must not let it in.
    app.register_blueprint(audit_blueprint(store, AuditorTokens.of(TOKEN, CLIENT_JWT)))
    return app.test_client()


def get(client, path: str, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, headers=headers)


@pytest.mark.parametrize("token", [None, "wrong-token", CLIENT_JWT, f"{TOKEN}x"])
def test_only_an_auditor_token_opens_the_api(client, token) -> None:
    for path in ("/audit/evaluations", "/audit/evaluations/x", "/audit/rules/a/b/stats", "/audit/verify"):
        response = get(client, path, token)
        assert response.status_code == 401
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_is_not_a_token(client) -> None:
    response = client.get("/audit/evaluations", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401


def test_list_filter_page_and_trace(client, store: AuditStore, record_bundle) -> None:
    for n in range(3):
        record_bundle(sciatica(f"s{n}"), Caller(client="ehr-a"))
    emergency = record_bundle(cauda_equina("ce"), Caller(client="ehr-b", user="Practitioner/9"))
    body = get(client, "/audit/evaluations?limit=2").get_json()
    assert [i["seq"] for i in body["items"]] == [1, 2] and body["next"]
    assert [i["seq"] for i in get(client, body["next"]).get_json()["items"]] == [3, 4]
    [item] = get(client, "/audit/evaluations?triage=emergency").get_json()["items"]
    assert item["id"] == emergency.record_id and item["client"] == "ehr-b"
    assert len(get(client, "/audit/evaluations?client=ehr-a").get_json()["items"]) == 3
    assert len(get(client, "/audit/evaluations?rule=red-flags/cauda-equina-emergency").get_json()["items"]) == 1
    assert len(get(client, "/audit/evaluations?action=nsaid&patient=Patient/s1").get_json()["items"]) == 1
    assert get(client, "/audit/evaluations?since=2999-01-01").get_json()["items"] == []
    assert len(get(client, "/audit/evaluations?until=2999-01-01T00:00:00Z").get_json()["items"]) == 4
    trace = get(client, f"/audit/evaluations/{emergency.record_id}").get_json()
    assert trace["triage"] == "emergency" and trace["firings"] and trace["input"]["facts"]
    assert "raw" not in trace["input"]
    assert "raw" in get(client, f"/audit/evaluations/{emergency.record_id}?include=raw").get_json()["input"]
    assert get(client, "/audit/evaluations/nope").status_code == 404


def test_rule_stats_over_a_period(client, store: AuditStore, record_bundle) -> None:
    result = record_bundle(sciatica())
    rule = "radicular/acute-conservative"
    card = next(c["uuid"] for c in result.cards if rule in c["rules"])
    store.record_feedback(FeedbackRecord(card=card, outcome="overridden", outcome_at=result_time()))
    stats = get(client, f"/audit/rules/{rule}/stats?since=2000-01-01").get_json()
    assert stats["rule"] == rule and stats["firings"] == 1 and stats["overridden"] == 1
    assert stats["overrideRate"] == round(1 / 3, 4)


def test_bad_queries_are_named(client) -> None:
    for query, name in (("since=yesterday", "since"), ("limit=0", "limit"), ("limit=x", "limit"),
                        ("after=-1", "after")):
        response = get(client, f"/audit/evaluations?{query}")
        assert response.status_code == 400
        assert name in response.get_json()["issue"][0]["diagnostics"]


def test_verify_over_http(client, record_bundle) -> None:
    record_bundle(sciatica())
    body = get(client, "/audit/verify").get_json()
    assert body["ok"] and body["headSeq"] == 1


def test_tokens_file(tmp_path: Path) -> None:
    token, line = new_token()
    path = tmp_path / "auditors"
    path.write_text(f"# auditors\n{line} alice\n\n{hash_token('other')}  bob the auditor\n")
    tokens = AuditorTokens.load(path)
    assert tokens.auditor(token) == "alice" and tokens.auditor("other") == "bob the auditor"
    assert tokens.auditor("nope") is None
    path.write_text("sha256:nothex alice\n")
    with pytest.raises(AuditConfigError, match=":1"):
        AuditorTokens.load(path)


def result_time():
    from datetime import datetime

    return datetime.now(UTC)
