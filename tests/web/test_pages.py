"""The web pages through Flask's test client: sign-in, roles, CSRF, bad
input, configuration refusals, and the SVG builders' escaping."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cds.api import create_app
from cds.bootstrap import ConfigError, load_config
from cds.web import chart, graph
from cds.web.users import Users, UsersFileError, line_for
from tests.web.conftest import PASSWORDS, SAMPLES, FormClient, web_config

RED_FLAG = SAMPLES / "01-cauda-equina-urinary-retention.json"


def evaluate(forms: FormClient, sample: Path = RED_FLAG) -> str:
    forms.get("/web/review")
    answer = forms.post("/web/review", {"bundle": sample.read_text()})
    assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
    return str(answer.headers["Location"].rsplit("/", 1)[1])


def test_pages_need_sign_in_and_the_right_role(forms: FormClient) -> None:
    for path in ("/web/review", "/web/audit/", "/web/audit/rules", "/web/audit/chain", "/web/audit/export.ndjson"):
        answer = forms.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].startswith("/web/sign-in?next="), path
    forms.sign_in("alice")
    assert forms.get("/web/review").status_code == 200
    for path in ("/web/audit/", "/web/audit/rules", "/web/audit/chain", "/web/audit/export.ndjson"):
        assert forms.get(path).status_code == 403, path
    forms.sign_in("bob")
    assert forms.get("/web/audit/").status_code == 200
    assert forms.get("/web/review").status_code == 403
    forms.sign_in("carol")
    assert forms.get("/web/review").status_code == 200 and forms.get("/web/audit/").status_code == 200


def test_wrong_password_unknown_user_and_sign_out(forms: FormClient) -> None:
    forms.get("/web/sign-in")
    assert forms.post("/web/sign-in", {"username": "alice", "password": "wrong"}).status_code == 401
    assert forms.post("/web/sign-in", {"username": "mallory", "password": "anything"}).status_code == 401
    assert forms.get("/web/review").status_code == 302
    forms.sign_in("alice")
    assert forms.get("/web/review").status_code == 200
    assert forms.post("/web/sign-out", {}).status_code == 302
    assert forms.get("/web/review").status_code == 302


def test_post_without_the_csrf_token_is_refused(forms: FormClient) -> None:
    forms.sign_in("alice")
    evaluation = evaluate(forms)
    page = forms.get(f"/web/review/{evaluation}").get_data(as_text=True)
    card = re.search(r'id="card-([0-9a-f-]{36})"', page).group(1)  # type: ignore[union-attr]
    refused = forms.client.post(f"/web/review/{evaluation}/feedback",
                                data={"card": card, "outcome": "overridden", "reason": "patient-declined"})
    assert refused.status_code == 400 and "form expired" in refused.get_data(as_text=True)
    forged = forms.client.post(f"/web/review/{evaluation}/feedback", data={
        "csrf_token": "x" * 43, "card": card, "outcome": "overridden", "reason": "patient-declined"})
    assert forged.status_code == 400
    store = forms.app.extensions["cds_web"].store
    assert store.get_evaluation(evaluation)["feedback"] == []
    assert forms.client.post("/web/sign-in", data={"username": "alice", "password": PASSWORDS["alice"]}
                             ).status_code == 400


def test_sign_in_redirects_only_to_web_pages(forms: FormClient) -> None:
    forms.get("/web/sign-in")
    for target, expected in (("https://evil.example/", "/web/"), ("//evil.example/web/", "/web/"),
                             ("/web/audit/?x=1", "/web/audit/?x=1"), ("/cds-services", "/web/")):
        forms.post("/web/sign-out", {})
        forms.get("/web/sign-in")
        answer = forms.post("/web/sign-in", {"username": "carol", "password": PASSWORDS["carol"], "next": target})
        assert answer.headers["Location"] == expected, target


def test_a_bad_bundle_is_named_on_the_page_and_nothing_is_lost(forms: FormClient) -> None:
    forms.sign_in("alice")
    store = forms.app.extensions["cds_web"].store
    for body, expected in (("{not json", "malformed JSON"), ('{"resourceType": "Patient"}', "needs an id"),
                           ('{"resourceType": "Bundle", "entry": []}', "exactly one Patient"),
                           ('{"resourceType": "Observation"}', "expected a FHIR Bundle"), ("", "paste a FHIR Bundle")):
        answer = forms.post("/web/review", {"bundle": body})
        assert answer.status_code == 400, body
        text = answer.get_data(as_text=True)
        assert expected in text, (body, text[:2000])
        if body:
            assert body.replace('"', "&#34;") in text  # the pasted text is kept for correction
    bad_unit = RED_FLAG.read_text().replace('"valueBoolean": true', '"valueQuantity": {"value": 1, "unit": "kg"}', 1)
    answer = forms.post("/web/review", {"bundle": bad_unit})
    text = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "entry[1] Observation/obs-1" in text, text   # the pasted Bundle's place
    assert "prefetch" not in text
    answer = forms.post("/web/review", {"bundle": RED_FLAG.read_text().replace('"id": "pat-01"', '"id": "pat 01"')})
    assert answer.status_code == 400 and "entry[0].resource.id" in answer.get_data(as_text=True)
    # A refused evaluation is recorded as failed, like any other channel's.
    failed = store.list_evaluations(outcome="error").items
    assert [e["client"] for e in failed] == ["cds-web:alice"]


def test_override_needs_a_reason_and_accept_needs_a_suggestion(forms: FormClient) -> None:
    forms.sign_in("alice")
    evaluation = evaluate(forms)
    page = forms.get(f"/web/review/{evaluation}").get_data(as_text=True)
    card = re.search(r'id="card-([0-9a-f-]{36})"', page).group(1)  # type: ignore[union-attr]
    answer = forms.post(f"/web/review/{evaluation}/feedback", {"card": card, "outcome": "overridden", "reason": ""})
    assert "choose a reason" in forms.get(answer.headers["Location"]).get_data(as_text=True)
    answer = forms.post(f"/web/review/{evaluation}/feedback", {"card": card, "outcome": "overridden",
                                                                "reason": "made-up"})
    assert "not one of the card" in forms.get(answer.headers["Location"]).get_data(as_text=True)
    store = forms.app.extensions["cds_web"].store
    assert store.get_evaluation(evaluation)["feedback"] == []
    forms.post(f"/web/review/{evaluation}/feedback", {"card": card, "outcome": "overridden", "reason": "",
                                                       "comment": "Seen in ED already"})
    forms.post(f"/web/review/{evaluation}/feedback", {"card": card, "outcome": "accepted"})
    feedback = store.get_evaluation(evaluation)["feedback"]
    assert [(f["outcome"], f["userComment"], f["client"]) for f in feedback] == [
        ("overridden", "Seen in ED already", "cds-web:alice"), ("accepted", None, "cds-web:alice")]
    assert feedback[1]["acceptedSuggestions"]
    assert forms.post(f"/web/review/{evaluation}/feedback", {"card": "no-such-card", "outcome": "accepted"}
                      ).status_code == 404
    assert store.verify().ok


def test_the_web_evaluation_is_the_patient_view_use_case(forms: FormClient) -> None:
    forms.sign_in("alice")
    evaluation = evaluate(forms)
    trace = forms.app.extensions["cds_web"].store.get_evaluation(evaluation)
    assert (trace["channel"], trace["hook"], trace["user"], trace["client"]) == (
        "cds-hooks", "patient-view", "Practitioner/alice", "cds-web:alice")
    assert trace["triage"] == "emergency" and trace["asOf"] == "2026-11-22" and trace["cards"]


def test_auditor_pages_refuse_bad_filters_with_a_page(forms: FormClient) -> None:
    forms.sign_in("bob")
    answer = forms.get("/web/audit/?since=yesterday")
    assert answer.status_code == 400 and "is not a date" in answer.get_data(as_text=True)
    assert answer.mimetype == "text/html"
    assert forms.get("/web/audit/?after=-1").status_code == 400
    assert forms.get("/web/audit/evaluations/nope").status_code == 404


def test_pages_send_security_headers(forms: FormClient) -> None:
    answer = forms.get("/web/sign-in")
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_configuration_refuses_unsafe_web_settings(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    with pytest.raises(ConfigError, match="CDS_WEB_SECRET_KEY"):
        load_config({**config, "CDS_WEB_SECRET_KEY": "", "CDS_AUTH": "on", "CDS_BIND": "0.0.0.0:8080",
                     "CDS_PUBLIC_BASE_URL": "https://cds.test", "TRUSTED_CLIENTS": object()})
    with pytest.raises(ConfigError, match="at least 32"):
        load_config({**config, "CDS_WEB_SECRET_KEY": "short"})
    with pytest.raises(ConfigError, match="audit database"):
        create_app({**config, "CDS_DATABASE_URL": ""})
    assert "web_secret_key" not in repr(load_config(config))
    assert config["CDS_WEB_SECRET_KEY"] not in repr(load_config(config))
    app = create_app({**config, "CDS_WEB_SECRET_KEY": ""})        # loopback: a per-process key
    assert app.secret_key and len(str(app.secret_key)) == 64


def test_users_file_is_checked_line_by_line(tmp_path: Path) -> None:
    good = line_for("dr.who", ["clinician"], "a long enough password")
    path = tmp_path / "users.txt"
    for text, message in ((f"{good}\n{good}\n", "appears twice"), ("x clinician plain-password\n", "password hash"),
                          (good.replace("clinician", "admin") + "\n", "roles must be"),
                          ("bad name clinician scrypt:1$a$b\n", "expected"),
                          (good.replace("dr.who", "dr/who") + "\n", "username")):
        path.write_text(text)
        with pytest.raises(UsersFileError, match=message):
            Users.load(path)
    path.write_text(f"# staff\n{good}  # comment\n")
    users = Users.load(path)
    assert users.authenticate("dr.who", "a long enough password") is not None
    assert users.authenticate("dr.who", "wrong") is None and users.authenticate("nobody", "x") is None
    with pytest.raises(UsersFileError, match="at least"):
        line_for("x", ["auditor"], "short")


def test_graph_and_chart_escape_what_the_record_says() -> None:
    hostile = "<script>alert(1)</script> & \"quotes\""
    evaluation: dict[str, Any] = {"recommendations": [{
        "id": "r1", "title": hostile, "urgency": "emergency", "rule": "x/y", "because": [
            {"fact": "d1", "type": "red-flag", "label": hostile, "rule": "x/z", "because": [
                {"fact": "Observation/1", "label": hostile, "resource": "Observation/1"}]},
            {"fact": "Observation/1", "label": hostile, "resource": "Observation/1"}]}], "alerts": []}
    picture = str(graph.svg(evaluation))
    assert "<script>" not in picture and "&lt;script&gt;" in picture
    nodes = graph.build(evaluation)
    assert [nodes[k].column for k in ("item:r1", "d1", "Observation/1")] == [0, 1, 2]   # the input is drawn once
    assert picture.count('class="node node-input"') == 1 and picture.count("marker-end") == 3
    bars = str(chart.svg([{"rule": hostile, "title": hostile, "firings": 3, "cards": 2, "accepted": 1,
                           "overridden": 1, "acceptanceRate": 0.5, "overrideRate": 0.5}]))
    assert "<script>" not in bars and "50% / 50% of 2" in bars


def test_a_tampered_trail_shows_broken_on_the_chain_and_evaluation_pages(forms: FormClient) -> None:
    from sqlalchemy import text

    forms.sign_in("carol")
    first = evaluate(forms)
    second = evaluate(forms, SAMPLES / "57-epidural-candidate-on-apixaban.json")
    assert "Verified." in forms.get("/web/audit/chain").get_data(as_text=True)
    store = forms.app.extensions["cds_web"].store
    with store.engine.begin() as conn:   # hide the emergency from a triage filter
        conn.execute(text("UPDATE audit_evaluation SET triage = 'routine' WHERE id = :id"), {"id": first})
    chain = forms.get("/web/audit/chain").get_data(as_text=True)
    assert "BROKEN at seq 1" in chain and "index altered" in chain
    page = forms.get(f"/web/audit/evaluations/{first}").get_data(as_text=True)
    assert "Not verifiable." in page and "chain-broken" in page
    later = forms.get(f"/web/audit/evaluations/{second}").get_data(as_text=True)
    assert "Not verifiable." in later   # a record after the break cannot be trusted either


def test_an_altered_record_is_caught_on_its_own_page_without_a_fresh_chain_walk(forms: FormClient) -> None:
    from sqlalchemy import text

    forms.sign_in("carol")
    evaluation = evaluate(forms)
    assert "Intact." in forms.get(f"/web/audit/evaluations/{evaluation}").get_data(as_text=True)
    store = forms.app.extensions["cds_web"].store
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_record SET content = REPLACE(content, '\"triage\":\"emergency\"', "
                          "'\"triage\":\"routine\"') WHERE record_id = :id"), {"id": evaluation})
    page = forms.get(f"/web/audit/evaluations/{evaluation}").get_data(as_text=True)   # the kept report is recent
    assert "no longer matches its hash" in page and "chain-broken" in page


def test_the_users_command_prints_a_line_the_service_accepts(tmp_path: Path, monkeypatch: Any,
                                                            capsys: Any) -> None:
    from cds.web import users as users_module

    answers = iter(["a pass phrase of length", "a pass phrase of length"])
    monkeypatch.setattr(users_module.getpass, "getpass", lambda _prompt: next(answers))
    assert users_module.main(["dana", "--role", "clinician", "--role", "auditor"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("dana auditor,clinician scrypt:") and "a pass phrase" not in line
    path = tmp_path / "users.txt"
    path.write_text(line + "\n")
    dana = Users.load(path).authenticate("dana", "a pass phrase of length")
    assert dana is not None and dana.has("clinician") and dana.has("auditor")
    answers = iter(["one password here", "another password"])
    assert users_module.main(["erin", "--role", "clinician"]) == 2


def test_the_evaluation_list_pages_and_filters(forms: FormClient) -> None:
    from cds.web.users import WebUser

    review = forms.app.extensions["cds_web"].review
    dana = WebUser("dana", frozenset({"clinician"}))
    alerts = SAMPLES / "57-epidural-candidate-on-apixaban.json"
    for index in range(27):
        review.evaluate_bundle((RED_FLAG if index % 3 else alerts).read_bytes(), dana)
    forms.sign_in("bob")
    first = forms.get("/web/audit/").get_data(as_text=True)
    assert first.count('href="/web/audit/evaluations/') == 25 and "Next page" in first and "First page" not in first
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    second = forms.get(next_url).get_data(as_text=True)
    assert second.count('href="/web/audit/evaluations/') == 2 and "Next page" not in second and "First page" in second
    for query, count in (("triage=emergency", 18), ("triage=routine", 9),
                         ("rule=safety/hold-anticoagulant-before-injection", 9),
                         ("action=emergency-spine-surgery", 18), ("client=cds-web:dana", 25),
                         ("client=cds-web:nobody", 0), ("patient=pat-57", 9), ("outcome=error", 0),
                         ("since=2026-11-23", 0), ("until=2026-11-22", 25)):
        page = forms.get(f"/web/audit/?{query}").get_data(as_text=True)
        assert page.count('href="/web/audit/evaluations/') == min(count, 25), query
