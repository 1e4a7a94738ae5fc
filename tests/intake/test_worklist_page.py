"""The clinicians' worklist page (/web/worklist) on the web pages' sign-in."""

from __future__ import annotations

import re

from tests.intake.conftest import RETENTION, SCIATICA, observation, patient
from tests.web.conftest import SECRET, FormClient, users_file


def _web_intake(make_intake, tmp_path):
    return make_intake(CDS_WEB_USERS_FILE=str(users_file(tmp_path)), CDS_WEB_SECRET_KEY=SECRET)


def test_the_page_needs_a_signed_in_clinician(make_intake, tmp_path) -> None:
    intake = _web_intake(make_intake, tmp_path)
    anonymous = intake.app.test_client().get("/web/worklist/")
    assert anonymous.status_code == 302 and "/web/sign-in" in anonymous.headers["Location"]
    auditor = FormClient(intake.app)
    auditor.sign_in("bob")
    assert auditor.get("/web/worklist/").status_code == 403


def test_a_clinician_sees_the_red_flag_first_and_acknowledges_every_card(make_intake, tmp_path) -> None:
    intake = _web_intake(make_intake, tmp_path)
    intake.put(patient("quiet"))
    intake.put(observation("q-sci", SCIATICA, pid="quiet"))
    intake.put(patient())
    intake.put(observation("o-sci", SCIATICA))
    intake.put(observation("o-ret", RETENTION))
    alice = FormClient(intake.app)
    alice.sign_in("alice")
    page = alice.get("/web/worklist/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.index("Patient/p1") < html.index("Patient/quiet")  # most urgent first
    assert "Red flag" in html and "self-care → emergency" in html
    assert "Emergency spine-surgery assessment today" in html
    assert page.headers["X-Frame-Options"] == "DENY"
    for _ in range(20):  # bounded: each round acknowledges one card
        html = alice.get("/web/worklist/").get_data(as_text=True)
        cards = re.findall(r'name="card" value="([^"]+)">\s*<input type="hidden" name="outcome" value="(\w+)"', html)
        if not cards:
            break
        card, outcome = cards[0]
        data = {"card": card, "outcome": outcome}
        if outcome == "overridden":
            data["reason"] = "already-addressed"
        else:
            block = html[html.index(f'value="{card}"'):]
            data["suggestion"] = re.findall(r'name="suggestion" value="([^"]+)"', block.split("</form>")[0])
        answer = alice.post("/web/worklist/feedback", data)
        assert answer.status_code == 302
    else:
        raise AssertionError("cards were still open after 20 acknowledgements")
    assert "Nothing to review" in alice.get("/web/worklist/").get_data(as_text=True)
    assert intake.worklist()["patients"] == []
    everything = alice.get("/web/worklist/?all=1").get_data(as_text=True)
    assert "(acknowledged)" in everything and "accepted" in everything


def test_a_form_without_its_csrf_token_is_refused(make_intake, tmp_path) -> None:
    intake = _web_intake(make_intake, tmp_path)
    alice = FormClient(intake.app)
    alice.sign_in("alice")
    alice.token = "forged"
    assert alice.post("/web/worklist/feedback", {"card": "x", "outcome": "accepted"}).status_code == 400
